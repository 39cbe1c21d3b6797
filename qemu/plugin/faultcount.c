/*
 * faultcount.c — gdbfault's zero-stop counting backend: a QEMU TCG plugin
 * (plugin API version 1, as in QEMU 7.2).
 *
 * Usage:
 *   qemu-system-i386 ... -plugin build/libfaultcount.so,probes=FILE,out=FILE[,autoret=on]
 *   (qemu-system-x86_64 the same: addresses are 64-bit throughout)
 *
 * Probe file: one probe a line, "<hex address> <kind> <name>", '#' comments.
 *   count  count executions of the address
 *   entry  a fault entry: opens a path on the executing vCPU
 *   event  counted; appended to the innermost open path's event list
 *   ret    closes the innermost open path (the instruction the fault handler
 *          returns to, right after "call do_page_fault"; on x86_64 Linux the
 *          one after "call exc_page_fault" in asm_exc_page_fault)
 *   arm    its first execution switches the phase from "boot" to "workload"
 *          (without an arm probe everything is "workload")
 *   mark   its first execution snapshots every probe's count ("at_mark" in
 *          the output) and tags the paths opened from then on
 *          ("after_mark": still phase "workload"): gdbfault --live-patch
 *          splits counts and paths before/after the patch with it
 *
 * Counting model
 *   - One vCPU: each translation block (TB) carries one inline add of its
 *     instruction count n at TB entry (no helper call, no per-instruction
 *     op).  A probe's callback runs after the TB-entry add and before its own
 *     instruction, so at a probe at index k of an n-instruction TB the
 *     instructions started before it are counter - n + k.  A path's cost is
 *     reading(at ret) - reading(at entry): the instructions from the entry
 *     instruction (inclusive) to the return site (exclusive), equal to the
 *     -icount shift=0 counter difference.
 *   - What whole-TB counting gets wrong: a TB left before its last
 *     instruction (an exception restoring state mid-TB, e.g. a page-faulting
 *     load; an MMIO access re-executed on its own under icount) has counted
 *     instructions that did not run.  Interrupts are taken only between TBs
 *     (the exit check precedes the TB-entry add), so they are exact.  So the
 *     counter word also counts "unfinished" TBs: a TB of more than one
 *     instruction adds n + 2^44 at entry, and its last instruction adds
 *     -2^44.  The reading's high 20 bits are then the number of TBs left
 *     early; outside an open path (a user-mode fault, the usual case) they
 *     cancel in the difference, and a path whose own window holds one
 *     (a fault nested inside the handler) is counted in inexact_paths (its
 *     cost, still recorded, is then too high).  A restoring fault on a TB's
 *     last instruction is not seen: +1, as with per-instruction counting.
 *   - insns_total is approximate: it exceeds icount by the unexecuted rest
 *     of every TB left early (about 4 per user page fault on the lab
 *     kernel), and is reported modulo 2^44.
 *   - Probe hits are inline adds too (per probe, never reset); the "arm"
 *     callback snapshots them, so boot = snapshot, workload = total - snapshot.
 *   - With one vCPU all counters are plain memory (the vCPU thread is the only
 *     writer).  With several vCPUs (MTTCG) a single inline counter would mix
 *     vCPUs, so the plugin instead uses per-instruction callbacks into
 *     per-vCPU counters (exact except for the +1 per restoring fault,
 *     slower).
 *
 * autoret=on: return sites need not be in the probe file.  Each direct call
 *   (e8 rel32) to an "entry" probe's address that QEMU translates makes the
 *   instruction after it a "ret" probe named return_auto_N (at most
 *   MAX_LEARNED); the output then lists them in "learned_returns".  This
 *   finds the return site of a kernel known only by its System.map (a
 *   bzImage: no code to disassemble).  It relies on the return site being
 *   translated only after its call (true for an entry stub whose call is
 *   the only way there, as do_page_fault's and exc_page_fault's are); a
 *   return site translated earlier would go unseen until QEMU retranslates.
 *
 * Output: JSON written to "out" at exit (atexit callback), via a temporary
 * file renamed into place, so a reader never sees half a file.
 *
 * This file is gdbfault's own code.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

#include "jsonout.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_PROBES      256
#define MAX_DEPTH       16      /* open paths per vCPU */
#define MAX_EVENTS      32      /* events kept per path */
#define MAX_VCPUS       64
#define MAX_LEARNED     16      /* return sites learned with autoret=on */
#define EV_TRUNCATED    (-1)    /* marker event: more events than MAX_EVENTS */

/*
 * The single-vCPU counter packs two counts in one 64-bit word, so each TB
 * needs one inline add at entry and one at its last instruction:
 *   bits 0..43   guest instructions (TB sizes added at TB entry)
 *   bits 44..63  TBs entered but not run to their last instruction
 * Readings are only ever subtracted from each other, so both fields may wrap
 * (insns_total is reported modulo 2^44, about 1.7e13 instructions).
 */
#define INSN_BITS       44
#define UNFINISHED_TB   ((uint64_t)1 << INSN_BITS)
#define INSN_MASK       (UNFINISHED_TB - 1)

/* site callback udata: site index, "TB marked" flag, instructions from the
 * probed one to the end of its TB (at most 512 per TB in QEMU) */
#define TAG_BACK_MASK   ((uintptr_t)0xfff)
#define TAG_MARK_SHIFT  12
#define TAG_MARK        ((uintptr_t)1 << TAG_MARK_SHIFT)
#define TAG_SITE_SHIFT  13

enum kind { K_COUNT, K_ENTRY, K_EVENT, K_RET, K_ARM, K_MARK };
static const char *const kind_names[] = { "count", "entry", "event", "ret", "arm", "mark" };

struct probe {
    uint64_t addr;
    enum kind kind;
    char *name;
    uint64_t total;             /* inline-counted executions (1 vCPU) */
    uint64_t boot;              /* snapshot of total at arm time */
    uint64_t at_mark;           /* snapshot of total at mark time */
};

/* All probes at one address, processed in kind order: arm, ret, entry, event. */
struct site {
    uint64_t addr;
    int nprobes;
    int probe_ix[8];
};

struct open_path {
    int entry;                  /* probe index */
    int phase;                  /* 0 boot, 1 workload */
    uint64_t start;             /* insn counter at entry */
    int nevents;
    int events[MAX_EVENTS + 1];
};

struct vcpu {
    uint64_t insns;             /* used when multi-vCPU */
    int depth;                  /* open paths on the stack */
    int overflow;               /* entries beyond MAX_DEPTH not pushed */
    struct open_path stack[MAX_DEPTH];
};

struct hist_bin { uint64_t cost, n; };

struct shape {
    int phase, entry, nevents;
    int *events;
    size_t nbins, cap;
    struct hist_bin *bins;      /* sorted by cost */
    struct shape *next;
};

static struct probe probes[MAX_PROBES];
static int nprobes;
static struct site *sites;      /* sorted by addr */
static int nsites;
/* autoret=on: learned return sites (site index nsites + i in callbacks) */
static int autoret;
static struct site learned[MAX_LEARNED];
static int nlearned;
static uint64_t learned_overflow;
static int has_arm;
static int has_mark, marked;    /* a mark probe; it has executed */
static int phase;               /* 0 boot, 1 workload, 2 workload after the mark */
static int multi;               /* more than one vCPU possible */
static int nvcpus = 1;
static struct vcpu *vcpus;
static uint64_t insns_inline;   /* single-vCPU inline instruction counter */
static uint64_t unmatched_ret, dropped_paths, inexact_paths;
static struct shape *shapes;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *out_path;

/* ---------------------------------------------------------------- probes */

static int parse_kind(const char *s)
{
    for (unsigned i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
        if (strcmp(s, kind_names[i]) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int kind_rank(enum kind k)
{
    switch (k) {
    case K_ARM: return 0;
    case K_MARK: return 0;
    case K_RET: return 1;
    case K_ENTRY: return 2;
    case K_EVENT: return 3;
    default: return 4;
    }
}

static int cmp_site(const void *a, const void *b)
{
    const struct site *x = a, *y = b;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int load_probes(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int lineno = 0;

    if (!f) {
        fprintf(stderr, "faultcount: cannot open probe file %s: %s\n",
                path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char addr[64], kind[32], name[256];
        char *hash = strchr(line, '#');
        int k, n;

        lineno++;
        if (hash) {
            *hash = '\0';
        }
        n = sscanf(line, "%63s %31s %255s", addr, kind, name);
        if (n <= 0) {
            continue;
        }
        if (n != 3 || (k = parse_kind(kind)) < 0) {
            fprintf(stderr, "faultcount: %s:%d: expected '<hex address> "
                    "<count|entry|event|ret|arm|mark> <name>'\n", path, lineno);
            fclose(f);
            return -1;
        }
        if (nprobes == MAX_PROBES) {
            fprintf(stderr, "faultcount: %s: more than %d probes\n",
                    path, MAX_PROBES);
            fclose(f);
            return -1;
        }
        probes[nprobes].addr = strtoull(addr, NULL, 16);
        probes[nprobes].kind = (enum kind)k;
        probes[nprobes].name = strdup(name);
        if (k == K_ARM) {
            has_arm = 1;
        }
        if (k == K_MARK) {
            has_mark = 1;
        }
        nprobes++;
    }
    fclose(f);

    /* Group probes by address into sites. */
    sites = calloc(nprobes ? nprobes : 1, sizeof(*sites));
    for (int i = 0; i < nprobes; i++) {
        struct site *s = NULL;
        for (int j = 0; j < nsites; j++) {
            if (sites[j].addr == probes[i].addr) {
                s = &sites[j];
            }
        }
        if (!s) {
            s = &sites[nsites++];
            s->addr = probes[i].addr;
        }
        if (s->nprobes == (int)(sizeof(s->probe_ix) / sizeof(s->probe_ix[0]))) {
            fprintf(stderr, "faultcount: too many probes at %#" PRIx64 "\n",
                    s->addr);
            return -1;
        }
        /* insertion by kind rank, stable */
        int pos = s->nprobes;
        while (pos > 0 && kind_rank(probes[s->probe_ix[pos - 1]].kind) >
                          kind_rank(probes[i].kind)) {
            s->probe_ix[pos] = s->probe_ix[pos - 1];
            pos--;
        }
        s->probe_ix[pos] = i;
        s->nprobes++;
    }
    qsort(sites, nsites, sizeof(*sites), cmp_site);
    phase = has_arm ? 0 : 1;
    return 0;
}

static struct site *find_site(uint64_t addr)
{
    int lo = 0, hi = nsites - 1;
    for (int i = 0; i < nlearned; i++) {
        if (learned[i].addr == addr) {
            return &learned[i];
        }
    }
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (sites[mid].addr == addr) {
            return &sites[mid];
        }
        if (sites[mid].addr < addr) {
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return NULL;
}

/* the stable index a callback carries: file sites, then learned ones */
static int site_index(const struct site *s)
{
    if (s >= learned && s < learned + MAX_LEARNED) {
        return nsites + (int)(s - learned);
    }
    return (int)(s - sites);
}

/* ------------------------------------------------------------ aggregation */

static void hist_add(struct shape *sh, uint64_t cost)
{
    size_t lo = 0, hi = sh->nbins;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sh->bins[mid].cost < cost) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < sh->nbins && sh->bins[lo].cost == cost) {
        sh->bins[lo].n++;
        return;
    }
    if (sh->nbins == sh->cap) {
        sh->cap = sh->cap ? 2 * sh->cap : 8;
        sh->bins = realloc(sh->bins, sh->cap * sizeof(*sh->bins));
    }
    memmove(&sh->bins[lo + 1], &sh->bins[lo],
            (sh->nbins - lo) * sizeof(*sh->bins));
    sh->bins[lo].cost = cost;
    sh->bins[lo].n = 1;
    sh->nbins++;
}

static void record_path(const struct open_path *p, uint64_t cost)
{
    struct shape *sh;

    pthread_mutex_lock(&lock);
    for (sh = shapes; sh; sh = sh->next) {
        if (sh->phase == p->phase && sh->entry == p->entry &&
            sh->nevents == p->nevents &&
            memcmp(sh->events, p->events, p->nevents * sizeof(int)) == 0) {
            break;
        }
    }
    if (!sh) {
        sh = calloc(1, sizeof(*sh));
        sh->phase = p->phase;
        sh->entry = p->entry;
        sh->nevents = p->nevents;
        sh->events = malloc((p->nevents + 1) * sizeof(int));
        memcpy(sh->events, p->events, p->nevents * sizeof(int));
        /* append: keeps first-seen order in the output */
        struct shape **tail = &shapes;
        while (*tail) {
            tail = &(*tail)->next;
        }
        *tail = sh;
    }
    hist_add(sh, cost);
    pthread_mutex_unlock(&lock);
}

/* -------------------------------------------------------------- callbacks */

static inline uint64_t insn_count(unsigned int vcpu_index)
{
    return multi ? vcpus[vcpu_index].insns : insns_inline;
}

static void arm_now(void)
{
    pthread_mutex_lock(&lock);
    if (phase == 0) {
        for (int i = 0; i < nprobes; i++) {
            probes[i].boot = multi ? probes[i].boot : probes[i].total;
        }
        phase = 1;
    }
    pthread_mutex_unlock(&lock);
}

static void mark_now(void)
{
    pthread_mutex_lock(&lock);
    if (!marked) {
        for (int i = 0; i < nprobes; i++) {
            probes[i].at_mark = __atomic_load_n(&probes[i].total, __ATOMIC_RELAXED);
        }
        marked = 1;
        if (phase == 1) {
            phase = 2;
        }
    }
    pthread_mutex_unlock(&lock);
}

static void site_exec(unsigned int vcpu_index, void *udata)
{
    uintptr_t tag = (uintptr_t)udata;
    int sx = (int)(tag >> TAG_SITE_SHIFT);
    struct site *s = sx < nsites ? &sites[sx] : &learned[sx - nsites];
    struct vcpu *v = &vcpus[vcpu_index < (unsigned)nvcpus ? vcpu_index : 0];
    /* the reading: instructions started before this one (low bits) and
     * TBs left before their last instruction (high bits) */
    uint64_t now = insn_count(vcpu_index) - (tag & TAG_BACK_MASK) -
                   ((tag & TAG_MARK) ? UNFINISHED_TB : 0);

    for (int i = 0; i < s->nprobes; i++) {
        int ix = s->probe_ix[i];
        struct probe *p = &probes[ix];

        if (multi) {
            /* hits: boot/total kept by callback; boot counts before arm */
            if (__atomic_load_n(&phase, __ATOMIC_RELAXED) == 0 &&
                p->kind != K_ARM) {
                __atomic_fetch_add(&p->boot, 1, __ATOMIC_RELAXED);
            }
            __atomic_fetch_add(&p->total, 1, __ATOMIC_RELAXED);
        }
        switch (p->kind) {
        case K_ARM:
            if (phase == 0) {
                arm_now();
            }
            break;
        case K_MARK:
            if (!marked) {
                mark_now();
            }
            break;
        case K_RET:
            if (v->overflow > 0) {
                v->overflow--;
            } else if (v->depth == 0) {
                __atomic_fetch_add(&unmatched_ret, 1, __ATOMIC_RELAXED);
            } else {
                struct open_path *op = &v->stack[--v->depth];
                uint64_t d = now - op->start;
                if (d >= UNFINISHED_TB) {
                    /* a TB was left early inside the path: not exact */
                    __atomic_fetch_add(&inexact_paths, 1, __ATOMIC_RELAXED);
                }
                record_path(op, d & INSN_MASK);
            }
            break;
        case K_ENTRY:
            if (v->depth == MAX_DEPTH) {
                v->overflow++;
                __atomic_fetch_add(&dropped_paths, 1, __ATOMIC_RELAXED);
            } else {
                struct open_path *op = &v->stack[v->depth++];
                op->entry = ix;
                op->phase = phase;
                op->start = now;
                op->nevents = 0;
            }
            break;
        case K_EVENT:
            if (v->depth > 0 && v->overflow == 0) {
                struct open_path *op = &v->stack[v->depth - 1];
                if (op->nevents < MAX_EVENTS) {
                    op->events[op->nevents++] = ix;
                } else if (op->nevents == MAX_EVENTS) {
                    op->events[op->nevents++] = EV_TRUNCATED;
                }
            }
            break;
        default:
            break;
        }
    }
}

static void insn_exec_multi(unsigned int vcpu_index, void *udata)
{
    (void)udata;
    if (vcpu_index < (unsigned)nvcpus) {
        vcpus[vcpu_index].insns++;
    }
}

/* autoret: is this instruction `call <an entry probe>`?  Then the next
 * instruction is a return site: add a "ret" probe there (once). */
static void learn_return(struct qemu_plugin_insn *insn)
{
    const uint8_t *b;
    uint64_t va, next, target;
    size_t sz = qemu_plugin_insn_size(insn);
    int32_t rel;

    if (sz != 5) {
        return;
    }
    b = qemu_plugin_insn_data(insn);
    if (b[0] != 0xe8) {
        return;
    }
    va = qemu_plugin_insn_vaddr(insn);
    next = va + sz;
    memcpy(&rel, b + 1, 4);
    target = next + (uint64_t)(int64_t)rel;
    if (next <= 0xffffffffu) {
        target &= 0xffffffffu;          /* 32-bit code wraps at 4 GiB */
    }
    struct site *t = find_site(target);
    int is_entry = 0;
    for (int j = 0; t && j < t->nprobes; j++) {
        is_entry |= probes[t->probe_ix[j]].kind == K_ENTRY;
    }
    if (!is_entry) {
        return;
    }
    pthread_mutex_lock(&lock);
    struct site *s = find_site(next);
    for (int j = 0; s && j < s->nprobes; j++) {
        if (probes[s->probe_ix[j]].kind == K_RET) {
            pthread_mutex_unlock(&lock);
            return;                     /* known already */
        }
    }
    if (nlearned == MAX_LEARNED || nprobes == MAX_PROBES ||
        (s && s->nprobes == (int)(sizeof(s->probe_ix) / sizeof(s->probe_ix[0])))) {
        learned_overflow++;
        pthread_mutex_unlock(&lock);
        return;
    }
    char name[32];
    snprintf(name, sizeof(name), "return_auto_%d", nlearned);
    int ix = nprobes;
    probes[ix].addr = next;
    probes[ix].kind = K_RET;
    probes[ix].name = strdup(name);
    probes[ix].total = probes[ix].boot = probes[ix].at_mark = 0;
    if (!s) {
        s = &learned[nlearned];
        s->addr = next;
        s->nprobes = 0;
    }
    /* a ret runs after arm/mark and before entry/event (kind_rank) */
    int pos = s->nprobes;
    while (pos > 0 && kind_rank(probes[s->probe_ix[pos - 1]].kind) > kind_rank(K_RET)) {
        s->probe_ix[pos] = s->probe_ix[pos - 1];
        pos--;
    }
    s->probe_ix[pos] = ix;
    s->nprobes++;
    nprobes = ix + 1;
    if (s == &learned[nlearned]) {
        nlearned++;                     /* visible to find_site only now */
    }
    pthread_mutex_unlock(&lock);
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    /* a TB of one instruction cannot be left before its last instruction */
    int marked = !multi && n > 1;
    (void)id;

    if (n == 0) {
        return;
    }
    if (!multi) {
        /* the TB's instructions, plus one "unfinished TB" unit that the
         * last instruction takes back */
        qemu_plugin_register_vcpu_tb_exec_inline(
            tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns_inline,
            n + (marked ? UNFINISHED_TB : 0));
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        struct site *s = nsites || nlearned ? find_site(qemu_plugin_insn_vaddr(insn)) : NULL;

        if (autoret) {
            learn_return(insn);
        }

        if (s) {
            int needs_cb = multi;
            for (int j = 0; j < s->nprobes; j++) {
                struct probe *p = &probes[s->probe_ix[j]];
                if (p->kind != K_COUNT) {
                    needs_cb = 1;
                }
                if (!multi) {
                    qemu_plugin_register_vcpu_insn_exec_inline(
                        insn, QEMU_PLUGIN_INLINE_ADD_U64, &p->total, 1);
                }
            }
            if (needs_cb) {
                /* Callbacks run before the instruction's inline ops (QEMU
                 * emits all of an instruction's callbacks, then its inline
                 * ops), so here the counter holds the whole TB (n) and, if
                 * marked, its unfinished unit: the site reading subtracts
                 * n - i (the instructions from this one to the TB's end)
                 * and the unit. */
                uintptr_t tag = multi ? 0 : (uintptr_t)(n - i) |
                                ((uintptr_t)marked << TAG_MARK_SHIFT);
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn, site_exec, QEMU_PLUGIN_CB_NO_REGS,
                    (void *)(((uintptr_t)site_index(s) << TAG_SITE_SHIFT) | tag));
            }
        }
        if (multi) {
            qemu_plugin_register_vcpu_insn_exec_cb(
                insn, insn_exec_multi, QEMU_PLUGIN_CB_NO_REGS, NULL);
        } else if (marked && i == n - 1) {
            /* reached the last instruction: the TB was not left early */
            qemu_plugin_register_vcpu_insn_exec_inline(
                insn, QEMU_PLUGIN_INLINE_ADD_U64, &insns_inline,
                (uint64_t)0 - UNFINISHED_TB);
        }
    }
}

/* ----------------------------------------------------------------- output */

static const char *phase_name(int ph)
{
    return ph ? "workload" : "boot";     /* 2: "workload", with after_mark */
}

static void write_output(qemu_plugin_id_t id, void *udata)
{
    char *tmp;
    FILE *f;
    uint64_t total = 0;
    int open_paths = 0;
    (void)id;
    (void)udata;

    if (multi) {
        for (int i = 0; i < nvcpus; i++) {
            total += vcpus[i].insns;
        }
    } else {
        total = insns_inline & INSN_MASK;
    }
    for (int i = 0; i < nvcpus; i++) {
        open_paths += vcpus[i].depth + vcpus[i].overflow;
    }

    tmp = malloc(strlen(out_path) + 16);
    sprintf(tmp, "%s.tmp", out_path);
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "faultcount: cannot write %s: %s\n", tmp,
                strerror(errno));
        free(tmp);
        return;
    }
    fprintf(f, "{\"backend\":\"plugin\",\"version\":1,\n\"hits\":{");
    /* one entry per probe name (names may repeat across addresses: summed) */
    for (int i = 0; i < nprobes; i++) {
        uint64_t boot = 0, tot = 0;
        int first = 1;
        for (int j = 0; j < i; j++) {
            if (strcmp(probes[j].name, probes[i].name) == 0) {
                first = 0;
            }
        }
        if (!first) {
            continue;
        }
        for (int j = i; j < nprobes; j++) {
            if (strcmp(probes[j].name, probes[i].name) == 0) {
                /* single vCPU: boot is the snapshot at arm (0 if never armed
                 * while in boot phase -> everything still boot) */
                uint64_t b = multi ? probes[j].boot
                             : (phase == 0 ? probes[j].total : probes[j].boot);
                boot += b;
                tot += probes[j].total;
            }
        }
        fprintf(f, "%s\n ", i ? "," : "");
        json_str(f, probes[i].name);
        fprintf(f, ":{\"boot\":%" PRIu64 ",\"workload\":%" PRIu64
                ",\"kind\":\"%s\",\"address\":\"%#" PRIx64 "\"",
                boot, tot - boot, kind_names[probes[i].kind], probes[i].addr);
        if (has_mark) {
            uint64_t at = 0;
            for (int j = i; j < nprobes; j++) {
                if (strcmp(probes[j].name, probes[i].name) == 0) {
                    at += marked ? probes[j].at_mark : probes[j].total;
                }
            }
            /* workload hits before the mark */
            fprintf(f, ",\"at_mark\":%" PRIu64, at >= boot ? at - boot : 0);
        }
        fputc('}', f);
    }
    fprintf(f, "},\n\"paths\":[");
    int first = 1;
    for (struct shape *sh = shapes; sh; sh = sh->next) {
        uint64_t n = 0;
        fprintf(f, "%s\n {\"phase\":\"%s\",\"entry\":", first ? "" : ",",
                phase_name(sh->phase));
        first = 0;
        json_str(f, probes[sh->entry].name);
        fprintf(f, ",\"events\":[");
        for (int e = 0; e < sh->nevents; e++) {
            if (e) {
                fputc(',', f);
            }
            json_str(f, sh->events[e] == EV_TRUNCATED ? "..."
                        : probes[sh->events[e]].name);
        }
        fprintf(f, "],\"cost_hist\":{");
        for (size_t b = 0; b < sh->nbins; b++) {
            fprintf(f, "%s\"%" PRIu64 "\":%" PRIu64, b ? "," : "",
                    sh->bins[b].cost, sh->bins[b].n);
            n += sh->bins[b].n;
        }
        fprintf(f, "},\"count\":%" PRIu64 "%s}", n,
                sh->phase == 2 ? ",\"after_mark\":true" : "");
    }
    fprintf(f, "],\n\"unmatched_ret\":%" PRIu64 ",\"open_paths_at_exit\":%d,"
            "\"dropped_paths\":%" PRIu64 ",\"inexact_paths\":%" PRIu64
            ",\"insns_total\":%" PRIu64
            ",\"phase_at_exit\":\"%s\",\"marked\":%s,\"vcpus\":%d,\"max_depth\":%d}\n",
            unmatched_ret, open_paths, dropped_paths, inexact_paths, total,
            phase_name(phase), marked ? "true" : "false",
            nvcpus, MAX_DEPTH);
    if (autoret) {
        /* (only with autoret=on: the default output is unchanged) */
        fseek(f, -2, SEEK_CUR);         /* reopen the object: drop "}\n" */
        fprintf(f, ",\n\"learned_returns\":[");
        int k = 0;
        for (int i = 0; i < nprobes; i++) {
            if (probes[i].kind == K_RET && strncmp(probes[i].name, "return_auto_", 12) == 0) {
                fprintf(f, "%s\"%#" PRIx64 "\"", k++ ? "," : "", probes[i].addr);
            }
        }
        fprintf(f, "],\"learned_overflow\":%" PRIu64 "}\n", learned_overflow);
    }
    if (fclose(f) != 0 || rename(tmp, out_path) != 0) {
        fprintf(stderr, "faultcount: cannot write %s: %s\n", out_path,
                strerror(errno));
    }
    free(tmp);
}

/* ---------------------------------------------------------------- install */

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *probe_path = NULL;

    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "faultcount: bad argument '%s' (want key=value)\n",
                    argv[i]);
            return -1;
        }
        if (strncmp(argv[i], "probes=", 7) == 0) {
            probe_path = eq + 1;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(eq + 1);
        } else if (strcmp(argv[i], "autoret=on") == 0 || strcmp(argv[i], "autoret=off") == 0) {
            autoret = strcmp(argv[i], "autoret=on") == 0;
        } else {
            fprintf(stderr, "faultcount: unknown argument '%s' "
                    "(known: probes=FILE, out=FILE, autoret=on|off)\n", argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "faultcount: missing out=FILE argument\n");
        return -1;
    }
    if (probe_path && load_probes(probe_path) < 0) {
        return -1;
    }
    if (!probe_path) {
        phase = 1;
    }
    if (info->system_emulation) {
        nvcpus = info->system.max_vcpus > 0 ? info->system.max_vcpus : 1;
        if (nvcpus > MAX_VCPUS) {
            fprintf(stderr, "faultcount: at most %d vCPUs\n", MAX_VCPUS);
            return -1;
        }
        multi = nvcpus > 1;
    }
    vcpus = calloc(nvcpus, sizeof(*vcpus));
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, write_output, NULL);
    return 0;
}
