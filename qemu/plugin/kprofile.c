/*
 * kprofile.c — gdbfault's kernel profiler: a QEMU TCG plugin (plugin API
 * version 1, as in QEMU 7.2) that attributes every executed guest
 * instruction to the kernel function containing it, per phase of the run,
 * counts each function's entries (calls and trap entries) and, on request,
 * keeps a shadow call stack for call chains (inclusive costs, folded stacks).
 *
 * Usage:
 *   qemu-system-i386 ... -plugin build/libkprofile.so,ranges=FILE,out=FILE
 *                               [,chains=on[,runs=off][,check=on][,node_calls=on]]
 *
 *   (default)   flat profile: per-function instructions and entries from
 *               inline counters only; no callback except at the phase marks
 *   chains=on   also call chains: a shadow call stack and a call tree
 *               ("nodes"), from a callback on the kernel blocks that can
 *               change the stack (same figures as the flat profile, plus
 *               the tree)
 *   runs=off    (chains) a callback on every block instead of inline runs
 *               of straight-line code: same results, slower (for checking)
 *   check=on    (chains) also count the flat way in the same run and report
 *               any per-function difference under "check" (for checking)
 *   node_calls=on  (chains; for `gdbfault inspect`'s per-fault call tree)
 *               also count how often each call-tree node was entered (each
 *               push: a call, or a trap frame), as an extra top-level key
 *               "node_calls": [[node id, [count per phase]], ...] (nodes
 *               entered at least once); nothing else in the output or the
 *               counting changes
 *
 * Ranges file (written by gdbfault/kprofile/ranges.py), one item a line:
 *   base <hex>                      addresses below it are user mode; a base
 *                                   above 4 GiB (an x86_64 kernel, base
 *                                   0xffffffff80000000) means 64-bit kernel code:
 *                                   REX prefixes are decoded (iretq = 48 cf,
 *                                   sysretq = 48 0f 07) and branch targets are
 *                                   64-bit; otherwise targets wrap at 4 GiB (i386)
 *   func <hex start> <hex end> <entry 0|1> <name>   sorted, not overlapping;
 *                                   entry=1: a trap/interrupt/syscall vector
 *   uaccess <hex address>           a kernel instruction allowed to fault
 *   mark <hex address> <before|after>   phase boundaries, in order: the i-th
 *                                   mark ends phase i (boot, setup, workload)
 *
 * What both modes share
 *   - Instructions: a block (TB) that may be left mid-way by a fault (user
 *     mode, or holding an __ex_table instruction: "exact" TBs) counts each
 *     instruction that started, the faulting one included (QEMU's -icount
 *     does not count that attempt: kernel + user exceeds the guest's rdtsc
 *     difference by exactly the number of such TBs left early, reported as
 *     left_early).  Any other TB is counted whole; one left early is reported
 *     as inexact (inexact_left_early; none on the lab workloads).
 *   - Entries of a function: the calls that reach it plus, for an entry
 *     (vector) function, the traps and interrupts that start it.  Arrivals by
 *     a jump or by falling into it are not entries (asm labels such as
 *     restore_all have none).
 *   - Phases advance at marks: an "after" mark ends its phase right after
 *     the marked instruction (the workload's rdtsc, whose value includes
 *     itself), a "before" mark right before it (the workload's entry point).
 *
 * Flat mode (see "flat profile" below): every TB owns counters ("slots"):
 * one inline add at the first instruction of each slot; a TB is one slot,
 * an exact TB one slot per instruction, and a mark also cuts slots at its
 * instruction.  Nothing is attributed while the guest runs: at each mark (a
 * callback on the marked instruction only) and at exit all TBs' counters
 * are summed per function ("fold"), and a phase's figures are the
 * differences between folds.  Entries are counted at the function's start:
 * the executions of TBs beginning there, minus the arrivals there that were
 * not calls (an unconditional jump, or falling into it from a TB that ended
 * just before, both counted inline where they leave).  A function also
 * reached by a conditional jump, by falling in after one, or by a return
 * (a call just before its start) has those arrivals uncountable inline;
 * from the translation of the first such way in, its entries are its direct
 * calls (counted inline at each call site): listed as entries_calls_only.
 *
 * Chains mode (see "call chains" below): at translation each kernel TB gets
 * a descriptor (its instructions grouped by function, how its last
 * instruction leaves, its direct target, a mark inside).  A callback (no
 * registers) on the kernel TBs that can change the stack or phase
 * attributes the *previous* such TB; exact ones bump a global counter per
 * instruction so the callback knows how many started, others add one at
 * their last instruction.  Straight-line code inside one function (a "run",
 * which may end in a direct call to a function's start) has no callback:
 * inline adds only, attributed at the next callback; a run's closing call
 * adds its TB's descriptor address for that callback to push the frame.
 * User-mode TBs have no callback either: they count their instructions and
 * unfinished TBs inline, and the next kernel callback (or a mark's own
 * callback) sees that user mode ran in between.
 *   Shadow call stack, updated on each TB transition P -> T:
 *       T at or above base entered from user mode, or T the start of an
 *       entry function not reached by a direct call/jump  -> push a trap frame;
 *       P ended in a call (and T is not a trap)           -> push a call frame
 *                                                          (return = P's end);
 *       P ended in ret   -> pop down to the frame returning to T (or one);
 *       P ended in iret  -> pop down to and including the newest trap frame;
 *       T in user mode   -> the stack is empty.
 *   Frames index a call tree (a trie of function ids); each TB's
 *   instructions go to the tree node of the current stack plus the TB's own
 *   function as leaf, giving folded "a;b;c count" lines.  Per-function
 *   instructions are the tree's, summed; entries are the call frames pushed
 *   and the trap frames that start a function.
 *
 * Output: JSON written to "out" at exit, via a temporary file renamed into
 * place.  KPROFILE_DEBUG=N in QEMU's environment prints the first N block
 * transitions of the workload phase to stderr (chains mode: for checking
 * the stack).  One vCPU only.  This file is gdbfault's own code.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

#include "jsonout.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define NPHASES     4           /* boot, setup, workload, exit */
#define MAX_MARKS   (NPHASES - 1)
#define F_USER      0           /* pseudo-function: user mode */
#define F_UNKNOWN   1           /* pseudo-function: kernel, no symbol */
#define NO_FUNC     UINT32_MAX
#define NO_TARGET   UINT64_MAX

static const char *const phase_names[NPHASES] = { "boot", "setup", "workload", "exit" };

enum last_kind { L_OTHER, L_CALL, L_RET, L_IRET, L_JUMP, L_INDIRECT_JUMP, L_TRAP };

/* The result of either mode: per function and phase. */
struct func {
    uint64_t start, end;
    int entry;
    char *name;
    uint64_t insns[NPHASES];
    uint64_t entries[NPHASES];
};

struct group { uint32_t func; uint32_t count; };

/* Totals of one mode, per phase. */
struct totals {
    uint64_t user[NPHASES];
    uint64_t left_early[NPHASES];          /* exact TBs left before their end */
    uint64_t inexact_left_early[NPHASES];  /* TBs counted whole, left early */
    uint64_t insns_started;                /* instructions of exact TBs */
};

static struct func *funcs;
static uint32_t nfuncs, capfuncs;
static uint64_t base = 0xc0000000u;
/* A 64-bit kernel (base above 4 GiB): decode REX prefixes, 64-bit targets.
 * User code below base may be 64-bit or 32-bit (IA32 emulation); it is only
 * classified for the stack's sake, and the stack ignores user-mode calls. */
static int long_mode;
static uint64_t addr_mask = 0xffffffffu;
static uint64_t mark_addr[MAX_MARKS];
static int mark_after[MAX_MARKS];
static int nmarks;
static uint64_t *uaccess;              /* sorted: kernel instructions allowed to fault */
static size_t nuaccess, capuaccess;
static char *out_path;
static int want_chains;                /* chains=on */
static int want_check;                 /* check=on: flat counters beside the chains */
static int want_node_calls;            /* node_calls=on: entries per call-tree node */
static int debug_left;

/* ------------------------------------------------------------ functions */

static uint32_t func_of(uint64_t addr)
{
    if (addr < base) {
        return F_USER;
    }
    uint32_t lo = 2, hi = nfuncs;          /* real functions from index 2 */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (funcs[mid].end <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < nfuncs && funcs[lo].start <= addr && addr < funcs[lo].end) {
        return lo;
    }
    return F_UNKNOWN;
}

/* The kernel function starting exactly at addr, or NO_FUNC. */
static uint32_t func_at_start(uint64_t addr)
{
    uint32_t f = addr == NO_TARGET ? F_USER : func_of(addr);
    return f > F_UNKNOWN && funcs[f].start == addr ? f : NO_FUNC;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int is_uaccess(uint64_t addr)
{
    size_t lo = 0, hi = nuaccess;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uaccess[mid] == addr) {
            return 1;
        }
        if (uaccess[mid] < addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

static void add_func(uint64_t start, uint64_t end, int entry, const char *name)
{
    if (nfuncs == capfuncs) {
        capfuncs = capfuncs ? 2 * capfuncs : 1024;
        funcs = realloc(funcs, capfuncs * sizeof(*funcs));
    }
    memset(&funcs[nfuncs], 0, sizeof(funcs[nfuncs]));
    funcs[nfuncs].start = start;
    funcs[nfuncs].end = end;
    funcs[nfuncs].entry = entry;
    funcs[nfuncs].name = strdup(name);
    nfuncs++;
}

static int load_ranges(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int lineno = 0;

    if (!f) {
        fprintf(stderr, "kprofile: cannot open ranges file %s: %s\n", path, strerror(errno));
        return -1;
    }
    add_func(0, 0, 0, "[user]");
    add_func(0, 0, 0, "[kernel:unknown]");
    while (fgets(line, sizeof(line), f)) {
        char w[5][512];
        int n;
        lineno++;
        if (line[0] == '#') {
            continue;
        }
        n = sscanf(line, "%15s %63s %63s %15s %511s", w[0], w[1], w[2], w[3], w[4]);
        if (n <= 0) {
            continue;
        }
        if (strcmp(w[0], "base") == 0 && n == 2) {
            base = strtoull(w[1], NULL, 16);
        } else if (strcmp(w[0], "func") == 0 && n == 5) {
            uint64_t s = strtoull(w[1], NULL, 16), e = strtoull(w[2], NULL, 16);
            if (e <= s || (nfuncs > 2 && s < funcs[nfuncs - 1].end)) {
                fprintf(stderr, "kprofile: %s:%d: function range empty, unsorted "
                        "or overlapping\n", path, lineno);
                fclose(f);
                return -1;
            }
            add_func(s, e, atoi(w[3]), w[4]);
        } else if (strcmp(w[0], "uaccess") == 0 && n == 2) {
            if (nuaccess == capuaccess) {
                capuaccess = capuaccess ? 2 * capuaccess : 256;
                uaccess = realloc(uaccess, capuaccess * sizeof(*uaccess));
            }
            uaccess[nuaccess++] = strtoull(w[1], NULL, 16);
        } else if (strcmp(w[0], "mark") == 0 && n == 3 && nmarks < MAX_MARKS &&
                   (strcmp(w[2], "before") == 0 || strcmp(w[2], "after") == 0)) {
            mark_addr[nmarks] = strtoull(w[1], NULL, 16);
            mark_after[nmarks] = strcmp(w[2], "after") == 0;
            nmarks++;
        } else {
            fprintf(stderr, "kprofile: %s:%d: expected 'base HEX', 'func START END "
                    "ENTRY NAME', 'uaccess ADDR' or 'mark ADDR before|after' (at most %d "
                    "marks)\n", path, lineno, MAX_MARKS);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    qsort(uaccess, nuaccess, sizeof(*uaccess), cmp_u64);
    long_mode = base > 0xffffffffu;
    addr_mask = long_mode ? UINT64_MAX : 0xffffffffu;
    return 0;
}

/* The phase before any mark: without marks everything is the "workload". */
static int first_phase(void)
{
    return nmarks ? 0 : 2;
}

/* ------------------------------------------------------------ decoding */

static uint64_t rd32(const uint8_t *p)
{
    return (uint64_t)(int64_t)(int32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
}

/* How an instruction leaves the straight line, its direct target, and
 * whether it may or may not go on to the next instruction (*cond: a
 * conditional jump or loop, or a rep-prefixed string instruction, which
 * QEMU runs as one TB execution per repetition). */
static enum last_kind classify(const uint8_t *b, size_t len, uint64_t next, uint64_t *target,
                               int *cond)
{
    size_t i = 0;
    int rep = 0;
    *target = NO_TARGET;
    *cond = 0;
    while (i < len && (b[i] == 0x66 || b[i] == 0x67 || b[i] == 0xf2 || b[i] == 0xf3 ||
                       b[i] == 0x2e || b[i] == 0x36 || b[i] == 0x3e || b[i] == 0x26 ||
                       b[i] == 0x64 || b[i] == 0x65 || b[i] == 0xf0 ||
                       /* REX (64-bit code only; inc/dec in 32-bit code) */
                       (long_mode && (b[i] & 0xf0) == 0x40 && i + 1 < len))) {
        rep |= b[i] == 0xf2 || b[i] == 0xf3;
        i++;
    }
    if (i >= len) {
        return L_OTHER;
    }
    uint8_t op = b[i];
    if (rep && ((op >= 0xa4 && op <= 0xa7) || (op >= 0xaa && op <= 0xaf) ||
                (op >= 0x6c && op <= 0x6f))) {
        *cond = 1;
        return L_OTHER;
    }
    uint8_t reg = i + 1 < len ? (b[i + 1] >> 3) & 7 : 0;
    switch (op) {
    case 0xe8:
        if (i + 5 <= len) {
            *target = (next + rd32(&b[i + 1])) & addr_mask;
        }
        return L_CALL;
    case 0x9a:
        return L_CALL;
    case 0xc3: case 0xc2: case 0xcb: case 0xca:
        return L_RET;
    case 0xcf:
        return L_IRET;
    case 0xcc: case 0xcd: case 0xce:
        return L_TRAP;
    case 0xe9:
        if (i + 5 <= len) {
            *target = (next + rd32(&b[i + 1])) & addr_mask;
        }
        return L_JUMP;
    case 0xeb:
        if (i + 2 <= len) {
            *target = (next + (uint64_t)(int64_t)(int8_t)b[i + 1]) & addr_mask;
        }
        return L_JUMP;
    case 0xe0: case 0xe1: case 0xe2: case 0xe3:         /* loop*, jecxz */
        *cond = 1;
        if (i + 2 <= len) {
            *target = (next + (uint64_t)(int64_t)(int8_t)b[i + 1]) & addr_mask;
        }
        return L_JUMP;
    case 0xea:
        return L_INDIRECT_JUMP;
    case 0xff:
        if (reg == 2 || reg == 3) {
            return L_CALL;
        }
        if (reg == 4 || reg == 5) {
            return L_INDIRECT_JUMP;
        }
        return L_OTHER;
    case 0x0f:
        if (i + 1 < len) {
            uint8_t op2 = b[i + 1];
            if (op2 >= 0x80 && op2 <= 0x8f && i + 6 <= len) {
                *target = (next + rd32(&b[i + 2])) & addr_mask;
                *cond = 1;
                return L_JUMP;
            }
            if (op2 == 0x34 || op2 == 0x05) {
                return L_TRAP;          /* sysenter, syscall */
            }
            if (op2 == 0x35 || op2 == 0x07) {
                return L_IRET;          /* sysexit, sysret: back to user */
            }
        }
        return L_OTHER;
    default:
        if (op >= 0x70 && op <= 0x7f && i + 2 <= len) {
            *target = (next + (uint64_t)(int64_t)(int8_t)b[i + 1]) & addr_mask;
            *cond = 1;
            return L_JUMP;
        }
        return L_OTHER;
    }
}

/* ------------------------------------------------- one translated block */

/* What both modes need to know about a TB being translated. */
struct tb_view {
    struct qemu_plugin_tb *tb;
    uint32_t n;                 /* instructions */
    uint64_t start, end;        /* [start, end): the TB's bytes */
    uint64_t target;            /* direct branch/call target of the last instruction */
    uint8_t kind;               /* enum last_kind of the last instruction */
    uint8_t cond;               /* a conditional jump */
    uint8_t user;               /* starts below base */
    uint8_t exact;              /* counted per instruction (may fault mid-TB) */
    uint32_t ngroups;
    struct group *groups;       /* [ngroups]: consecutive instructions by function */
    int8_t *mark;               /* [n]: index of a mark at that instruction, or -1 */
    uint32_t nmarked;           /* instructions carrying a mark */
};

static int view_tb(struct qemu_plugin_tb *tb, struct tb_view *v)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    int cond;
    if (n == 0) {
        return 0;
    }
    memset(v, 0, sizeof(*v));
    v->tb = tb;
    v->n = (uint32_t)n;
    v->target = NO_TARGET;
    v->groups = malloc(n * sizeof(*v->groups));
    v->mark = malloc(n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t va = qemu_plugin_insn_vaddr(insn);
        uint32_t f = func_of(va);

        if (i == 0) {
            v->start = va;
            v->user = va < base;
            v->exact = v->user;
        }
        if (v->ngroups && v->groups[v->ngroups - 1].func == f) {
            v->groups[v->ngroups - 1].count++;
        } else {
            v->groups[v->ngroups].func = f;
            v->groups[v->ngroups].count = 1;
            v->ngroups++;
        }
        v->mark[i] = -1;
        for (int m = 0; m < nmarks; m++) {
            if (mark_addr[m] == va) {
                v->mark[i] = (int8_t)m;
            }
        }
        v->nmarked += v->mark[i] >= 0;
        if (i == n - 1) {
            v->end = va + qemu_plugin_insn_size(insn);
            v->kind = (uint8_t)classify(qemu_plugin_insn_data(insn), qemu_plugin_insn_size(insn),
                                        v->end, &v->target, &cond);
            v->cond = (uint8_t)cond;
        }
        if (!v->exact && is_uaccess(va)) {
            v->exact = 1;
        }
    }
    return 1;
}

static void view_free(struct tb_view *v)
{
    free(v->groups);
    free(v->mark);
}

/* ===================================================== flat profile ====== */

/* One term of a TB's attribution: slot counter x weight instructions of func. */
struct fterm { uint32_t slot, func, weight; };

struct ftb {
    struct ftb *next_at_start;  /* the other TBs beginning at the same function start */
    uint32_t n, nslots, nterms;
    uint32_t start_func;        /* the kernel function whose start it begins at, or NO_FUNC */
    uint8_t exact;              /* one slot per instruction */
    uint64_t done;              /* not exact, n > 1: executions that reached the last instruction */
    uint64_t *extra[2];         /* flat_fn counters that its last instruction adds one to */
    uint32_t *slot_start;       /* [nslots] the first instruction of each slot */
    struct fterm *terms;        /* [nterms] */
    uint64_t cnt[];             /* [nslots] executions of each slot's first instruction */
};

/* A mark's callback: the marked instruction of one TB. */
struct fmark { struct ftb *tb; uint32_t insn; uint8_t after; int8_t index; };

struct flat_fn {
    uint64_t nonentry;          /* inline: arrivals at its start that are not entries */
    uint64_t dcalls;            /* inline: direct calls to it */
    struct ftb *starts;         /* TBs beginning at its start */
    uint8_t calls_only;         /* also reached by ways not countable inline (see top) */
    uint64_t s0_then, nonentry_then, dcalls_then;   /* when calls_only was set */
    uint64_t cum_insns;         /* at the previous fold */
    int64_t cum_entries;
    struct func res;            /* insns / entries per phase */
};

static struct {
    struct flat_fn *fn;         /* [nfuncs], never moved (inline counters inside) */
    struct ftb **tbs;
    size_t ntbs, captbs;
    int phase;
    struct totals tot;
    uint64_t cum_user, cum_left, cum_inexact;
    uint64_t *scratch_insns, *scratch_s0;   /* [nfuncs] */
    uint64_t entry_anomalies;   /* a phase whose entries came out negative (never seen) */
} flat;

static void flat_init(void)
{
    flat.fn = calloc(nfuncs, sizeof(*flat.fn));
    flat.scratch_insns = calloc(nfuncs, sizeof(uint64_t));
    flat.scratch_s0 = calloc(nfuncs, sizeof(uint64_t));
    flat.phase = first_phase();
}

/* From now on g's entries are its direct calls: some way into it that is not
 * a call cannot be told apart from a call by inline counters alone. */
static void flat_calls_only(uint32_t g)
{
    struct flat_fn *fn = &flat.fn[g];
    uint64_t s0 = 0;
    if (fn->calls_only) {
        return;
    }
    for (struct ftb *d = fn->starts; d; d = d->next_at_start) {
        s0 += d->cnt[0];
    }
    fn->s0_then = s0;
    fn->nonentry_then = fn->nonentry;
    fn->dcalls_then = fn->dcalls;
    fn->calls_only = 1;
}

/* Entries of function f so far, from the counters' current values (s0: the
 * executions of the TBs beginning at its start). */
static int64_t flat_entries(uint32_t f, uint64_t s0)
{
    const struct flat_fn *fn = &flat.fn[f];
    if (f == F_UNKNOWN) {
        return (int64_t)fn->dcalls;
    }
    if (fn->calls_only) {
        return (int64_t)(fn->s0_then - fn->nonentry_then + fn->dcalls - fn->dcalls_then);
    }
    return (int64_t)(s0 - fn->nonentry);
}

/* At a mark, counters the marked instruction is about to add (its callback
 * runs before its inline adds) count for the ending phase when the mark is
 * "after" it: +1 while folding, -1 after. */
static void flat_precredit(const struct fmark *mk, int64_t sign)
{
    struct ftb *d = mk->tb;
    for (uint32_t s = 0; s < d->nslots; s++) {
        if (d->slot_start[s] == mk->insn) {
            d->cnt[s] += (uint64_t)sign;
        }
    }
    if (mk->insn == d->n - 1) {
        if (!d->exact && d->n > 1) {
            d->done += (uint64_t)sign;
        }
        for (int k = 0; k < 2; k++) {
            if (d->extra[k]) {
                *d->extra[k] += (uint64_t)sign;
            }
        }
    }
}

/* Sum every TB's counters per function and give the current phase what
 * came since the previous fold.  mk: the mark being passed (mid-TB), or
 * NULL at exit. */
static void flat_fold(const struct fmark *mk)
{
    uint64_t *insns = flat.scratch_insns, *s0 = flat.scratch_s0;
    uint64_t user = 0, left = 0, inexact = 0, started = 0;
    int ph = flat.phase;

    memset(insns, 0, nfuncs * sizeof(*insns));
    memset(s0, 0, nfuncs * sizeof(*s0));
    if (mk && mk->after) {
        flat_precredit(mk, 1);
    }
    for (size_t i = 0; i < flat.ntbs; i++) {
        const struct ftb *d = flat.tbs[i];
        for (uint32_t t = 0; t < d->nterms; t++) {
            const struct fterm *tm = &d->terms[t];
            uint64_t v = d->cnt[tm->slot] * tm->weight;
            if (tm->func == F_USER) {
                user += v;
            } else {
                insns[tm->func] += v;
            }
        }
        if (d->exact) {
            left += d->cnt[0] - d->cnt[d->nslots - 1];
            for (uint32_t s = 0; s < d->nslots; s++) {
                started += d->cnt[s];
            }
        } else if (d->n > 1) {
            inexact += d->cnt[0] - d->done;
        }
        if (d->start_func != NO_FUNC) {
            s0[d->start_func] += d->cnt[0];
        }
    }
    if (mk) {
        /* the marked TB's current execution has begun (its first add is in)
         * but not reached its end: not left early, so far */
        const struct ftb *d = mk->tb;
        int begun = mk->after || mk->insn > 0;
        int ends_later = mk->after ? mk->insn < d->n - 1 : 1;
        if (d->n > 1 && begun && ends_later) {
            if (d->exact) {
                left--;
            } else {
                inexact--;
            }
        }
    }
    if (mk && mk->after) {
        flat_precredit(mk, -1);
    }
    for (uint32_t f = 1; f < nfuncs; f++) {
        struct flat_fn *fn = &flat.fn[f];
        int64_t e = flat_entries(f, s0[f]);
        fn->res.insns[ph] += insns[f] - fn->cum_insns;
        fn->cum_insns = insns[f];
        if (e < fn->cum_entries) {
            flat.entry_anomalies++;
        }
        fn->res.entries[ph] += (uint64_t)(e - fn->cum_entries);
        fn->cum_entries = e;
    }
    flat.tot.user[ph] += user - flat.cum_user;
    flat.tot.left_early[ph] += left - flat.cum_left;
    flat.tot.inexact_left_early[ph] += inexact - flat.cum_inexact;
    flat.cum_user = user;
    flat.cum_left = left;
    flat.cum_inexact = inexact;
    flat.tot.insns_started = started;
}

static void flat_mark(unsigned int vcpu_index, void *udata)
{
    const struct fmark *mk = udata;
    (void)vcpu_index;
    if (mk->index == flat.phase) {
        flat_fold(mk);
        flat.phase++;
    }
}

static uint32_t cut_slots(const struct tb_view *v, uint32_t *starts)
{
    uint32_t ns = 0;
    for (uint32_t i = 0; i < v->n; i++) {
        if (i == 0 || v->exact || v->mark[i] >= 0 || v->mark[i - 1] >= 0) {
            starts[ns++] = i;
        }
    }
    return ns;
}

static void flat_trans(const struct tb_view *v)
{
    uint32_t *starts = malloc(v->n * sizeof(*starts));
    uint32_t ns = cut_slots(v, starts), nt = 0;
    /* each slot: the groups it overlaps */
    size_t bytes = sizeof(struct ftb) + ns * sizeof(uint64_t);
    bytes += ns * sizeof(uint32_t) + (ns + v->ngroups) * sizeof(struct fterm);
    bytes = (bytes + 63) & ~(size_t)63;
    struct ftb *d = aligned_alloc(64, bytes);
    memset(d, 0, bytes);
    d->n = v->n;
    d->nslots = ns;
    d->exact = v->exact;
    d->slot_start = (uint32_t *)&d->cnt[ns];
    d->terms = (struct fterm *)&d->slot_start[ns];
    memcpy(d->slot_start, starts, ns * sizeof(*starts));
    free(starts);
    for (uint32_t s = 0, g = 0, gpos = 0; s < ns; s++) {
        uint32_t a = d->slot_start[s], b = s + 1 < ns ? d->slot_start[s + 1] : v->n;
        while (gpos + v->groups[g].count <= a) {
            gpos += v->groups[g++].count;
        }
        for (uint32_t gg = g, p = gpos; gg < v->ngroups && p < b; p += v->groups[gg++].count) {
            uint32_t lo = p > a ? p : a, hi = p + v->groups[gg].count < b ? p + v->groups[gg].count : b;
            d->terms[nt].slot = s;
            d->terms[nt].func = v->groups[gg].func;
            d->terms[nt].weight = hi - lo;
            nt++;
        }
    }
    d->nterms = nt;
    d->start_func = v->user ? NO_FUNC : func_at_start(v->start);
    if (d->start_func != NO_FUNC) {
        d->next_at_start = flat.fn[d->start_func].starts;
        flat.fn[d->start_func].starts = d;
    }

    struct qemu_plugin_insn *last = qemu_plugin_tb_get_insn(v->tb, v->n - 1);
    for (uint32_t s = 0; s < ns; s++) {
        qemu_plugin_register_vcpu_insn_exec_inline(qemu_plugin_tb_get_insn(v->tb, d->slot_start[s]),
                                                   QEMU_PLUGIN_INLINE_ADD_U64, &d->cnt[s], 1);
    }
    if (!d->exact && d->n > 1) {
        qemu_plugin_register_vcpu_insn_exec_inline(last, QEMU_PLUGIN_INLINE_ADD_U64, &d->done, 1);
    }
    if (!v->user) {
        /* how this TB reaches the start of a function: calls (entries),
         * other ways counted inline (not entries), or not countable */
        uint32_t next = func_at_start(v->end), tgt = func_at_start(v->target);
        int k = 0;
        if (v->kind == L_CALL && v->target != NO_TARGET && func_of(v->target) != F_USER) {
            d->extra[k++] = &flat.fn[func_of(v->target)].dcalls;
        }
        if (next != NO_FUNC) {
            if (v->kind == L_OTHER && !v->exact && !v->cond) {
                d->extra[k++] = &flat.fn[next].nonentry;    /* falls into it */
            } else if (v->kind == L_OTHER || v->kind == L_CALL || v->kind == L_TRAP ||
                       (v->kind == L_JUMP && v->cond)) {
                flat_calls_only(next);      /* maybe falls or returns into it */
            }
        }
        if (v->kind == L_JUMP && tgt != NO_FUNC) {
            if (v->cond) {
                flat_calls_only(tgt);
            } else {
                d->extra[k++] = &flat.fn[tgt].nonentry;     /* jumps to it */
            }
        }
        for (int j = 0; j < k; j++) {
            qemu_plugin_register_vcpu_insn_exec_inline(last, QEMU_PLUGIN_INLINE_ADD_U64, d->extra[j], 1);
        }
    }
    for (uint32_t i = 0; v->nmarked && i < v->n; i++) {
        if (v->mark[i] >= 0) {
            struct fmark *mk = malloc(sizeof(*mk));
            mk->tb = d;
            mk->insn = i;
            mk->after = (uint8_t)mark_after[v->mark[i]];
            mk->index = v->mark[i];
            qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(v->tb, i), flat_mark,
                                                   QEMU_PLUGIN_CB_NO_REGS, mk);
        }
    }
    if (flat.ntbs == flat.captbs) {
        flat.captbs = flat.captbs ? 2 * flat.captbs : 4096;
        flat.tbs = realloc(flat.tbs, flat.captbs * sizeof(*flat.tbs));
    }
    flat.tbs[flat.ntbs++] = d;
}

static void flat_finish(void)
{
    flat_fold(NULL);
}

/* ====================================================== call chains ====== */

#define MAX_DEPTH   64

/* One per translated kernel TB, 64-byte aligned, the fields the common case
 * reads first (one cache line); the callback's udata is its address tagged
 * with TAG_ENTRY, so the common case never reads the new TB's own. */
#define TAG_ENTRY   ((uintptr_t)2)
#define TAG_MASK    ((uintptr_t)63)

struct tb_desc {
    uint32_t n;                 /* instructions */
    uint32_t func0;             /* groups[0].func */
    uint32_t cache_top, cache_leaf;     /* call-tree node of group 0 under cache_top */
    uint8_t simple;             /* one_func, and no call/ret/iret/trap at its end */
    uint8_t one_func;           /* kernel code of one function, no mark */
    uint8_t run;                /* no callback: counted inline (see runs) */
    uint8_t call_run;           /* a run TB that ends in a direct call to a function start */
    uint32_t end_func;          /* function of the fall-through address */
    uint8_t kind;               /* enum last_kind */
    uint8_t user;               /* starts below base */
    uint8_t exact;              /* counted per instruction (may fault mid-TB) */
    uint8_t entry_start;        /* starts an entry (vector) function */
    uint64_t start, end;        /* [start, end): the TB's bytes */
    uint32_t call_top, call_func, call_node;  /* last call made from here: its frame's node */
    /* (the fields above: the first cache line, all the fast paths read) */
    uint64_t target;            /* direct branch/call target or NO_TARGET */
    int8_t mark;                /* index of a mark inside, or -1 */
    uint32_t mark_insn;         /* the marked instruction's index */
    uint32_t mark_split;        /* instructions before the boundary */
    uint32_t ngroups;
    struct group groups[];
};

#define LEAF_WAYS   4

struct node {
    uint32_t parent, func;
    uint32_t leaf_func[LEAF_WAYS], leaf_child[LEAF_WAYS];   /* leaf children last looked up */
    uint64_t insns[NPHASES];
};

/* A trap frame taken right after an indirect call, before its callee ran,
 * keeps the call (pending_ret != 0) to push it when the trap returns. */
struct frame {
    uint32_t node;
    uint32_t ret_func;
    uint64_t ret;
    int trap;
    uint64_t pending_ret;
    uint32_t pending_caller, pending_ret_func;
};

static int phase;                      /* the chains mode's phase */
static struct totals chains_tot;
static uint64_t insn_counter;          /* exact TBs: +1 per instruction started */
static uint64_t done_counter;          /* other TBs: +1 at their last instruction */
static uint64_t counter_at_prev, done_at_prev;   /* both at the previous TB's entry */
/* Runs: a TB inside one function, not at its start, that can only go on
 * within that function (fall-through and direct target there, no
 * call/ret/iret/trap) has no callback; it adds its instructions, one TB (plus
 * 2^32 if it has more than one instruction, taken back by its last one) and
 * its function id to these.  Between two callbacks such TBs form one run in
 * one function F = run_fsum / TB count, under an unchanged stack, since
 * entering a function at its start, calls, returns and traps all reach a
 * TB with a callback. */
static int use_runs = 1;
static uint64_t run_insns, run_tbs, run_fsum;
static uint64_t run_exact_open;        /* exact run TBs: +1 at entry, -1 at their end */
/* A run may end in a direct call to a function's start (whose TB has a
 * callback): that TB's last instruction adds its descriptor's address here. */
static uint64_t run_call;
#define RUN_TB_MASK     ((uint64_t)0xffffffffu)
#define RUN_OPEN        ((uint64_t)1 << 32)
static struct tb_desc *prev;
/* User mode has no callback: its TBs count inline, and the next kernel
 * callback (or a mark) sees that user code ran since the previous one. */
static uint64_t user_started;          /* +1 per user instruction started */
static uint64_t user_open;             /* +1 at a user TB's entry, -1 at its end (n > 1) */
static uint64_t user_started_seen, user_open_seen;   /* as accounted */
static struct tb_desc user_mode = { .user = 1, .exact = 1, .kind = L_OTHER, .target = NO_TARGET,
                                    .mark = -1, .end_func = F_USER };
/* a mark in a user TB: its callback */
struct umark { uint32_t n, insn; uint8_t after; int8_t index; };
static uint64_t ret_mismatch[NPHASES], iret_mismatch[NPHASES], overflow_drops[NPHASES],
    unbalanced_to_user[NPHASES];
static int max_depth_seen;

static struct frame stack[MAX_DEPTH];
static int depth;
static uint32_t top_node;              /* the top frame's call-tree node (0: empty stack) */
static int overflow;                   /* pushes beyond MAX_DEPTH not kept */
/* the call a returning trap frame kept (see struct frame), to push next */
static uint64_t resume_ret;
static uint32_t resume_caller, resume_ret_func;

static struct node *nodes;
static uint32_t nnodes, capnodes;
/* node_calls=on: entries per call-tree node and phase, indexed by node id,
 * grown on demand (note_node_call) */
static uint64_t (*node_calls)[NPHASES];
static uint32_t node_calls_cap;
/* open-addressing hash: (parent, func) -> node index + 1 */
static uint32_t *node_hash;
static uint32_t hash_cap;

/* ------------------------------------------------------------ call tree */

static uint32_t hash_key(uint32_t parent, uint32_t func)
{
    uint64_t k = ((uint64_t)parent << 32) | func;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static void hash_insert(uint32_t ix)
{
    uint32_t h = hash_key(nodes[ix].parent, nodes[ix].func) & (hash_cap - 1);
    while (node_hash[h]) {
        h = (h + 1) & (hash_cap - 1);
    }
    node_hash[h] = ix + 1;
}

/* May grow (move) `nodes`: never call it inside an expression that indexes
 * nodes (nodes[child(...)] may use the old array). */
static uint32_t child(uint32_t parent, uint32_t func)
{
    uint32_t h = hash_key(parent, func) & (hash_cap - 1);
    while (node_hash[h]) {
        struct node *nd = &nodes[node_hash[h] - 1];
        if (nd->parent == parent && nd->func == func) {
            return node_hash[h] - 1;
        }
        h = (h + 1) & (hash_cap - 1);
    }
    if (nnodes == capnodes) {
        capnodes *= 2;
        nodes = realloc(nodes, capnodes * sizeof(*nodes));
    }
    uint32_t ix = nnodes++;
    memset(&nodes[ix], 0, sizeof(nodes[ix]));
    nodes[ix].parent = parent;
    nodes[ix].func = func;
    memset(nodes[ix].leaf_func, 0xff, sizeof(nodes[ix].leaf_func));
    if (2 * nnodes > hash_cap) {
        free(node_hash);
        hash_cap *= 2;
        node_hash = calloc(hash_cap, sizeof(*node_hash));
        for (uint32_t i = 0; i < nnodes; i++) {
            hash_insert(i);
        }
    } else {
        node_hash[h] = ix + 1;
    }
    return ix;
}

/* node_calls=on: one more entry into call-tree node `node` */
static void note_node_call(uint32_t node)
{
    if (node >= node_calls_cap) {
        uint32_t cap = node_calls_cap ? node_calls_cap : 1024;
        uint64_t (*grown)[NPHASES];
        while (cap <= node) {
            cap *= 2;
        }
        grown = realloc(node_calls, cap * sizeof(*node_calls));
        if (!grown) {
            return;                     /* (the count of this one entry is lost) */
        }
        node_calls = grown;
        memset(node_calls + node_calls_cap, 0, (cap - node_calls_cap) * sizeof(*node_calls));
        node_calls_cap = cap;
    }
    node_calls[node][phase]++;
}

static void chains_init(void)
{
    phase = first_phase();
    capnodes = 1024;
    nodes = calloc(capnodes, sizeof(*nodes));
    nnodes = 1;                         /* node 0: the root (empty stack) */
    nodes[0].func = UINT32_MAX;
    memset(nodes[0].leaf_func, 0xff, sizeof(nodes[0].leaf_func));
    hash_cap = 4096;
    node_hash = calloc(hash_cap, sizeof(*node_hash));
}

/* ---------------------------------------------------------- the stack */

static inline void set_depth(int d)
{
    depth = d;
    top_node = d ? stack[d - 1].node : 0;
}

/* leaf_node() when f is neither the top frame's function nor its last leaf */
static uint32_t __attribute__((noinline)) leaf_lookup(uint32_t nd, uint32_t f)
{
    struct node *np = &nodes[nd];
    int w = 1;
    while (w < LEAF_WAYS - 1 && np->leaf_func[w] != f) {
        w++;
    }
    uint32_t leaf = np->leaf_func[w] == f ? np->leaf_child[w] : child(nd, f);
    np = &nodes[nd];                        /* child() may move nodes */
    for (; w > 0; w--) {                    /* most recent first */
        np->leaf_func[w] = np->leaf_func[w - 1];
        np->leaf_child[w] = np->leaf_child[w - 1];
    }
    np->leaf_func[0] = f;
    np->leaf_child[0] = leaf;
    return leaf;
}

/* The tree node of instructions of function f run under the current stack:
 * the top frame's node, or its child f when f is not the frame's own
 * function (reached by a jump or a fall-through, e.g. ret_from_exception
 * after page_fault). */
static inline uint32_t leaf_node(uint32_t f)
{
    uint32_t nd = top_node;
    const struct node *np = &nodes[nd];
    if (np->func == f) {
        return nd;
    }
    if (np->leaf_func[0] == f) {
        return np->leaf_child[0];
    }
    return leaf_lookup(nd, f);
}

/* caller: the function the call instruction is in (UINT32_MAX for a trap);
 * from: the calling TB, whose descriptor caches the node; ret_func: the
 * function returned into (from's end function when from is given) */
static void push_frame(uint32_t func, uint64_t ret, int trap, uint32_t caller, struct tb_desc *from,
                       uint32_t ret_func)
{
    uint32_t top = top_node, node;
    /* an entry: a call, or a trap that starts a function (not a jump from
     * below base into the middle of one, as a boot trampoline does) */
    if (!trap || (func > F_UNKNOWN && from && from->start == funcs[func].start)) {
        funcs[func].entries[phase]++;
    }
    if (depth == MAX_DEPTH) {
        overflow++;
        overflow_drops[phase]++;
        return;
    }
    if (from && from->call_top == top && from->call_func == func) {
        node = from->call_node;
    } else {
        node = child(caller == UINT32_MAX ? top : leaf_node(caller), func);
        if (from) {
            from->call_top = top;
            from->call_func = func;
            from->call_node = node;
        }
    }
    if (want_node_calls) {
        note_node_call(node);
    }
    stack[depth].node = node;
    stack[depth].ret = ret;
    stack[depth].ret_func = ret_func;
    stack[depth].trap = trap;
    stack[depth].pending_ret = 0;
    set_depth(depth + 1);
    if (depth > max_depth_seen) {
        max_depth_seen = depth;
    }
}

static void push(uint32_t func, uint64_t ret, int trap, uint32_t caller, struct tb_desc *from)
{
    push_frame(func, ret, trap, caller, from, from && !trap ? from->end_func : F_UNKNOWN);
}

static void pop_ret(uint64_t to)
{
    if (overflow) {
        overflow--;
        return;
    }
    for (int i = depth - 1; i >= 0 && i >= depth - 8; i--) {
        if (stack[i].ret == to) {
            set_depth(i);
            return;
        }
        if (stack[i].trap) {
            break;              /* never return past a trap frame */
        }
    }
    ret_mismatch[phase]++;
    if (depth && !stack[depth - 1].trap) {
        set_depth(depth - 1);
    }
}

/* A return whose target was not seen (it went on in a run in function f):
 * pop down to the frame returning into f. */
static void pop_ret_func(uint32_t f)
{
    if (overflow) {
        overflow--;
        return;
    }
    for (int i = depth - 1; i >= 0 && i >= depth - 8; i--) {
        if (stack[i].ret_func == f) {
            set_depth(i);
            return;
        }
        if (stack[i].trap) {
            break;
        }
    }
    ret_mismatch[phase]++;
    if (depth && !stack[depth - 1].trap) {
        set_depth(depth - 1);
    }
}

static void pop_iret(void)
{
    overflow = 0;
    for (int i = depth - 1; i >= 0; i--) {
        if (stack[i].trap) {
            if (stack[i].pending_ret) {
                resume_ret = stack[i].pending_ret;
                resume_caller = stack[i].pending_caller;
                resume_ret_func = stack[i].pending_ret_func;
            }
            set_depth(i);
            return;
        }
    }
    if (depth) {
        iret_mismatch[phase]++;
    }
    set_depth(0);
}

/* ---------------------------------------------------------- attribution */

/* leaf_node() for group g of TB d, cached in d for the first group */
static inline uint32_t tb_leaf(struct tb_desc *d, uint32_t g, uint32_t f)
{
    uint32_t top = top_node;
    if (g != 0) {
        return leaf_node(f);
    }
    if (d->cache_top != top) {
        d->cache_leaf = leaf_node(f);
        d->cache_top = top;
    }
    return d->cache_leaf;
}

/* Attribute instructions [from, to) of TB d to the current phase. */
static void attribute(struct tb_desc *d, uint32_t from, uint32_t to)
{
    uint32_t pos = 0;
    if (from >= to) {
        return;
    }
    for (uint32_t g = 0; g < d->ngroups && pos < to; g++) {
        uint32_t a = pos > from ? pos : from;
        uint32_t b = pos + d->groups[g].count < to ? pos + d->groups[g].count : to;
        pos += d->groups[g].count;
        if (a >= b) {
            continue;
        }
        uint32_t f = d->groups[g].func, c = b - a;
        if (f == F_USER) {
            chains_tot.user[phase] += c;
            continue;
        }
        uint32_t leaf = tb_leaf(d, g, f);   /* first: it may move nodes */
        nodes[leaf].insns[phase] += c;
    }
}

/* How many of the previous TB's instructions started; *finished says
 * whether it ran to its last one.  Only "exact" TBs (user mode, or holding a
 * kernel instruction allowed to fault) count per instruction; any other TB
 * left early is counted whole and reported as inexact. */
static uint32_t prev_started(int *finished)
{
    const struct tb_desc *p = prev;
    if (p->exact) {
        uint64_t started = insn_counter - counter_at_prev;
        if (started > p->n) {
            started = p->n;         /* cannot happen; keep sums sane */
        }
        *finished = started == p->n;
        return (uint32_t)started;
    }
    *finished = p->n == 1 || done_counter != done_at_prev;
    return p->n;
}

static void account_prev(uint32_t started, int finished)
{
    struct tb_desc *p = prev;
    if (!finished) {
        if (p->exact) {
            chains_tot.left_early[phase]++;
        } else {
            chains_tot.inexact_left_early[phase]++;
        }
    }
    if (p->mark >= 0 && p->mark == phase && started > p->mark_insn) {
        attribute(p, 0, p->mark_split);
        phase++;
        attribute(p, p->mark_split, started);
    } else {
        attribute(p, 0, started);
    }
}

/* The run since the last callback, if any: attributed to its function
 * under the current stack; returns that function or UINT32_MAX. */
static uint32_t run_function(void)
{
    uint64_t tbs = run_tbs & RUN_TB_MASK;
    uint32_t f = nodes[top_node].func;
    if (tbs <= 1) {
        return tbs ? (uint32_t)run_fsum : UINT32_MAX;
    }
    if ((uint64_t)f * tbs == run_fsum) {
        return f;               /* most runs: the top frame's own function, no division */
    }
    return (uint32_t)(run_fsum / tbs);
}

static void flush_run(uint32_t f)
{
    chains_tot.inexact_left_early[phase] += run_tbs >> 32;
    chains_tot.left_early[phase] += run_exact_open;
    run_exact_open = 0;
    run_call = 0;
    uint32_t leaf = leaf_node(f);       /* first: it may move nodes */
    nodes[leaf].insns[phase] += run_insns;
    run_insns = run_tbs = run_fsum = 0;
}

static void stack_update(struct tb_desc *p, struct tb_desc *t, int completed);
static void transition(struct tb_desc *p, struct tb_desc *t, int completed);

/* The kernel TB before user mode ran: attributed, and its way out taken.
 * (A run pending now ran after user mode: kernel code goes to user mode
 * only from a TB with a callback, an iret's.) */
static void leave_kernel(void)
{
    struct tb_desc *p = prev;
    if (p && p != &user_mode) {
        int completed;
        uint32_t started = prev_started(&completed);
        account_prev(started, completed);
        transition(p, &user_mode, completed);
    }
    prev = &user_mode;
    counter_at_prev = insn_counter;
    done_at_prev = done_counter;
}

/* User instructions since the last look (extra: the marked one, about to
 * start; open_adj: a TB begun but not ended, not left early so far). */
static void account_user(uint64_t extra, uint64_t open_adj)
{
    chains_tot.user[phase] += user_started + extra - user_started_seen;
    chains_tot.left_early[phase] += user_open - open_adj - user_open_seen;
    user_started_seen = user_started + extra;
    user_open_seen = user_open - open_adj;
}

static void chains_user_mark(unsigned int vcpu_index, void *udata)
{
    const struct umark *mk = udata;
    (void)vcpu_index;
    if (mk->index != phase) {
        return;
    }
    leave_kernel();
    account_user(mk->after, mk->n > 1 && (mk->after || mk->insn > 0));
    phase++;
}

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    struct tb_desc *t = (struct tb_desc *)((uintptr_t)udata & ~TAG_MASK);
    struct tb_desc *p = prev;
    int completed = 0;
    (void)vcpu_index;
    if (user_started != user_started_seen || p == &user_mode) {
        /* back from user mode */
        leave_kernel();
        account_user(0, 0);
        stack_update(&user_mode, t, 1);
        return;
    }
    if (p && p->one_func) {
        /* kernel code of one function: its node under the current stack
         * (flat per-function counts are the call tree's, summed at exit) */
        uint32_t started = p->n;
        if (p->exact) {
            uint64_t s = insn_counter - counter_at_prev;
            started = s < p->n ? (uint32_t)s : p->n;
            completed = started == p->n;
            chains_tot.left_early[phase] += !completed;
        } else {
            completed = p->n == 1 || done_counter != done_at_prev;
            chains_tot.inexact_left_early[phase] += !completed;
        }
        uint32_t leaf = tb_leaf(p, 0, p->func0);    /* first: it may move nodes */
        nodes[leaf].insns[phase] += started;
        if (!((uintptr_t)udata & TAG_ENTRY) && completed) {
            /* the common cases, t not a trap: */
            struct tb_desc *rc = (struct tb_desc *)(uintptr_t)run_call;
            if (p->simple) {
                /* no stack change by p; then maybe a run (under the same
                 * stack), which may end in a call (p -> run -> call -> t) */
                if (run_tbs) {
                    flush_run(run_function());
                }
                if (rc) {
                    push(t->func0, rc->end, 0, rc->func0, rc);
                }
                goto next;
            }
            if (p->kind == L_RET && !rc) {
                /* a return, then maybe a run in the function returned to */
                uint32_t cf = run_function();
                if (cf != UINT32_MAX) {
                    pop_ret_func(cf);
                    flush_run(cf);
                } else {
                    pop_ret(t->start);
                }
                goto next;
            }
        }
    } else if (p) {
        uint32_t started = prev_started(&completed);
        account_prev(started, completed);
    }
    stack_update(p, t, completed);
    return;
next:
    prev = t;
    done_at_prev = done_counter;
    counter_at_prev = insn_counter;
}

/* The shadow stack after the transition p -> t, no run between them (p ran
 * to its end if completed). */
static void transition(struct tb_desc *p, struct tb_desc *t, int completed)
{
    uint32_t tf = t->user ? F_USER : t->func0;
    int direct = completed && p->target == t->start &&
                 (p->kind == L_CALL || p->kind == L_JUMP);
    int trap = !t->user && (p->user || (t->entry_start && !direct));
    int pending_call = 0;
    if (p->user) {
        /* user-mode calls and returns are not the kernel's stack */
    } else if (completed && p->kind == L_CALL) {
        if (!trap) {
            push(tf, p->end, 0, p->groups[p->ngroups - 1].func, p);
        } else if (p->target != NO_TARGET) {
            push(func_of(p->target), p->end, 0, p->groups[p->ngroups - 1].func, NULL);   /* an interrupt before the callee ran */
        } else {
            pending_call = 1;       /* ... an indirect callee: pushed when the trap returns */
        }
    } else if (completed && p->kind == L_RET) {
        pop_ret(t->start);
    } else if (completed && p->kind == L_IRET) {
        pop_iret();
        if (resume_ret) {
            if (!t->user) {
                push_frame(tf, resume_ret, 0, resume_caller, NULL, resume_ret_func);
            }
            resume_ret = 0;
        }
    }
    if (t->user) {
        if (depth || overflow) {
            unbalanced_to_user[phase]++;
        }
        set_depth(0);
        overflow = 0;
    } else if (trap) {
        int before = depth;
        push(tf, 0, 1, UINT32_MAX, t);
        if (pending_call && depth > before) {
            stack[depth - 1].pending_ret = p->end;
            stack[depth - 1].pending_caller = p->groups[p->ngroups - 1].func;
            stack[depth - 1].pending_ret_func = p->end_func;
        }
    }
}

/* The shadow stack after p -> (a run, if any) -> t (p ran to its end if completed). */
static void __attribute__((noinline)) stack_update(struct tb_desc *p, struct tb_desc *t, int completed)
{
    uint32_t cf = run_function();
    if (cf != UINT32_MAX) {
        /* p -> (a run in function cf, maybe ending in a call) -> t */
        struct tb_desc *rc = (struct tb_desc *)(uintptr_t)run_call;
        if (p && !p->user && completed) {
            if (p->kind == L_CALL) {
                push(p->target != NO_TARGET ? func_of(p->target) : cf, p->end, 0,
                     p->groups[p->ngroups - 1].func, p);
            } else if (p->kind == L_RET) {
                pop_ret_func(cf);
            } else if (p->kind == L_IRET) {
                pop_iret();
                resume_ret = 0;         /* a callee starts at a TB with a callback */
            }
        }
        if (p && p->user) {
            push(cf, 0, 1, UINT32_MAX, NULL);   /* entered from user mode (mid-function) */
        }
        flush_run(cf);
        if (rc) {
            transition(rc, t, 1);       /* its last instruction, the call, ran */
        } else if (t->user) {
            unbalanced_to_user[phase] += depth || overflow;
            set_depth(0);
            overflow = 0;
        } else if (t->entry_start && !(cf == t->func0 && funcs[cf].start == t->start)) {
            push(t->func0, 0, 1, UINT32_MAX, t);
        }
    } else if (p) {
        if (debug_left > 0 && phase == 2) {
            debug_left--;
            fprintf(stderr, "P %#" PRIx64 "-%#" PRIx64 " n=%u kind=%d tgt=%#" PRIx64 " started=%" PRIu64
                    " -> T %#" PRIx64 " (%s) depth=%d\n", p->start, p->end, p->n, p->kind, p->target,
                    insn_counter - counter_at_prev, t->start,
                    funcs[t->ngroups ? t->groups[0].func : 0].name, depth);
        }
        transition(p, t, completed);
    }
    prev = t;
    counter_at_prev = insn_counter;
    done_at_prev = done_counter;
}

/* May a run in function f go on to address x? */
static int run_may_go(uint32_t f, uint64_t x)
{
    return x != NO_TARGET && (func_of(x) == f || func_at_start(x) != NO_FUNC);
}

/* A user TB: no callback, counted inline; a mark gets a callback of its own. */
static void chains_trans_user(const struct tb_view *v)
{
    size_t n = v->n;
    struct qemu_plugin_tb *tb = v->tb;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (v->mark[i] >= 0) {
            struct umark *mk = malloc(sizeof(*mk));
            mk->n = v->n;
            mk->insn = (uint32_t)i;
            mk->after = (uint8_t)mark_after[v->mark[i]];
            mk->index = v->mark[i];
            qemu_plugin_register_vcpu_insn_exec_cb(insn, chains_user_mark,
                                                   QEMU_PLUGIN_CB_NO_REGS, mk);
        }
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   &user_started, 1);
        if (n > 1 && (i == 0 || i == n - 1)) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &user_open,
                                                       i == 0 ? 1 : (uint64_t)0 - 1);
        }
    }
}

static void chains_trans(const struct tb_view *v)
{
    size_t n = v->n;
    struct qemu_plugin_tb *tb = v->tb;
    size_t bytes = (sizeof(struct tb_desc) + v->ngroups * sizeof(struct group) + 63) & ~(size_t)63;
    struct tb_desc *d;

    if (v->user) {
        chains_trans_user(v);
        return;
    }
    d = aligned_alloc(64, bytes);
    memset(d, 0, bytes);
    d->n = v->n;
    d->start = v->start;
    d->end = v->end;
    d->user = v->user;
    d->exact = v->exact;
    d->kind = v->kind;
    d->target = v->target;
    d->ngroups = v->ngroups;
    memcpy(d->groups, v->groups, v->ngroups * sizeof(struct group));
    d->mark = -1;
    for (uint32_t i = 0; v->nmarked && i < v->n; i++) {
        if (v->mark[i] >= 0) {
            d->mark = v->mark[i];
            d->mark_insn = i;
            d->mark_split = i + (mark_after[v->mark[i]] ? 1 : 0);
        }
    }
    d->one_func = !d->user && d->ngroups == 1 && d->mark < 0;
    d->simple = d->one_func &&
                (d->kind == L_OTHER || d->kind == L_JUMP || d->kind == L_INDIRECT_JUMP);
    d->entry_start = !d->user && funcs[d->groups[0].func].entry &&
                     funcs[d->groups[0].func].start == d->start;
    d->cache_top = UINT32_MAX;
    d->call_top = UINT32_MAX;
    d->func0 = d->groups[0].func;
    d->end_func = func_of(d->end);
    /* A run TB: inside one function, not at its start, and wherever it goes
     * next is either that function again (not a TB with a callback of its
     * own, maybe) or the start of a function (always a TB with a callback):
     * so a run stays in one function under one stack. */
    d->run = use_runs && d->one_func && d->func0 != F_UNKNOWN && !d->entry_start &&
             d->start != funcs[d->func0].start &&
             ((d->kind == L_OTHER && run_may_go(d->func0, d->end)) ||
              (d->kind == L_JUMP && run_may_go(d->func0, d->target) &&
               (!v->cond || run_may_go(d->func0, d->end))) ||
              (d->kind == L_CALL && func_at_start(d->target) != NO_FUNC));
    d->call_run = d->run && d->kind == L_CALL;
    if (d->call_run) {
        qemu_plugin_register_vcpu_insn_exec_inline(qemu_plugin_tb_get_insn(tb, n - 1),
                                                   QEMU_PLUGIN_INLINE_ADD_U64, &run_call,
                                                   (uint64_t)(uintptr_t)d);
    }
    if (d->run && d->exact) {
        /* may fault mid-way: its instructions count one by one */
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &run_tbs, 1);
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &run_fsum,
                                                 d->func0);
        for (size_t i = 0; i < n; i++) {
            struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &run_insns, 1);
            if (n > 1 && (i == 0 || i == n - 1)) {
                qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                           &run_exact_open,
                                                           i == 0 ? 1 : (uint64_t)0 - 1);
            }
        }
        return;
    }
    if (d->run) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &run_insns, n);
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &run_tbs,
                                                 1 + (n > 1 ? RUN_OPEN : 0));
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &run_fsum,
                                                 d->func0);
        if (n > 1) {
            qemu_plugin_register_vcpu_insn_exec_inline(qemu_plugin_tb_get_insn(tb, n - 1),
                                                       QEMU_PLUGIN_INLINE_ADD_U64, &run_tbs,
                                                       (uint64_t)0 - RUN_OPEN);
        }
        return;
    }
    /* Per-instruction counting only where a fault may leave the TB early;
     * elsewhere one add at the last instruction says the TB finished. */
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (d->exact) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &insn_counter, 1);
        } else if (i == n - 1 && n > 1) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &done_counter, 1);
        }
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)((uintptr_t)d | (d->entry_start ? TAG_ENTRY : 0)));
}

static void chains_finish(void)
{
    if (user_started != user_started_seen || prev == &user_mode) {
        leave_kernel();
        account_user(0, 0);
    } else if (prev) {
        int finished;
        uint32_t started = prev_started(&finished);
        account_prev(started, 1);   /* the last TB: ran until QEMU stopped */
        (void)finished;
    }
    if (run_function() != UINT32_MAX) {
        flush_run(run_function());
    }
    prev = NULL;
    /* flat counts: every kernel instruction went to a call-tree node of its
     * own function */
    for (uint32_t i = 1; i < nnodes; i++) {
        for (int ph = 0; ph < NPHASES; ph++) {
            funcs[nodes[i].func].insns[ph] += nodes[i].insns[ph];
        }
    }
    chains_tot.insns_started = user_started + insn_counter;
}

/* ================================================= both modes: glue ====== */

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    struct tb_view v;
    (void)id;
    if (!view_tb(tb, &v)) {
        return;
    }
    if (!want_chains || want_check) {
        flat_trans(&v);
    }
    if (want_chains) {
        chains_trans(&v);
    }
    view_free(&v);
}

static void json_phases(FILE *f, const uint64_t *v)
{
    fputc('[', f);
    for (int p = 0; p < NPHASES; p++) {
        fprintf(f, "%s%" PRIu64, p ? "," : "", v[p]);
    }
    fputc(']', f);
}

static int any(const uint64_t *v)
{
    for (int p = 0; p < NPHASES; p++) {
        if (v[p]) {
            return 1;
        }
    }
    return 0;
}

static int same(const uint64_t *a, const uint64_t *b)
{
    return memcmp(a, b, NPHASES * sizeof(*a)) == 0;
}

static void write_totals(FILE *f, const struct totals *t)
{
    fprintf(f, "\"user\":");
    json_phases(f, t->user);
    fprintf(f, ",\"unknown_kernel\":");
    json_phases(f, funcs[F_UNKNOWN].insns);
    fprintf(f, ",\"left_early\":");
    json_phases(f, t->left_early);
    fprintf(f, ",\"inexact_left_early\":");
    json_phases(f, t->inexact_left_early);
    fprintf(f, ",\"insns_started\":%" PRIu64, t->insns_started);
}

static void write_chains_part(FILE *f)
{
    fprintf(f, "\"stack\":{\"ret_mismatch\":");
    json_phases(f, ret_mismatch);
    fprintf(f, ",\"iret_mismatch\":");
    json_phases(f, iret_mismatch);
    fprintf(f, ",\"overflow\":");
    json_phases(f, overflow_drops);
    fprintf(f, ",\"to_user_unbalanced\":");
    json_phases(f, unbalanced_to_user);
    fprintf(f, ",\"max_depth\":%d,\"limit\":%d}", max_depth_seen, MAX_DEPTH);
}

static void write_flat_part(FILE *f)
{
    int first = 1;
    fprintf(f, "\"entries_calls_only\":[");
    for (uint32_t i = 2; i < nfuncs; i++) {
        if (flat.fn[i].calls_only) {
            fprintf(f, "%s%u", first ? "" : ",", i);
            first = 0;
        }
    }
    fprintf(f, "],\"entry_anomalies\":%" PRIu64, flat.entry_anomalies);
}

/* check=on: the flat counters of the same run against the chains' figures */
static void write_check(FILE *f)
{
    int first = 1, differ = 0;
    fprintf(f, "\"check\":{\"flat\":{\"differ\":[");
    for (uint32_t i = 1; i < nfuncs; i++) {
        const struct func *c = &funcs[i], *fl = &flat.fn[i].res;
        if (same(c->insns, fl->insns) && same(c->entries, fl->entries)) {
            continue;
        }
        differ++;
        fprintf(f, "%s\n {\"id\":%u,\"name\":", first ? "" : ",", i);
        first = 0;
        json_str(f, c->name);
        fprintf(f, ",\"insns\":");
        json_phases(f, c->insns);
        fprintf(f, ",\"flat_insns\":");
        json_phases(f, fl->insns);
        fprintf(f, ",\"entries\":");
        json_phases(f, c->entries);
        fprintf(f, ",\"flat_entries\":");
        json_phases(f, fl->entries);
        fputc('}', f);
    }
    int totals_same = same(chains_tot.user, flat.tot.user) &&
                      same(chains_tot.left_early, flat.tot.left_early) &&
                      same(chains_tot.inexact_left_early, flat.tot.inexact_left_early) &&
                      phase == flat.phase;
    fprintf(f, "],\"totals_equal\":%s,\"flat_user\":", totals_same ? "true" : "false");
    json_phases(f, flat.tot.user);
    fprintf(f, ",\"flat_left_early\":");
    json_phases(f, flat.tot.left_early);
    fprintf(f, ",\"flat_inexact_left_early\":");
    json_phases(f, flat.tot.inexact_left_early);
    fprintf(f, ",\"flat_phase_at_exit\":\"%s\",", phase_names[flat.phase]);
    write_flat_part(f);
    fprintf(f, ",\"equal\":%s}}", !differ && totals_same ? "true" : "false");
}

/* node_calls=on: the extra "node_calls" key (written after "nodes") */
static void write_node_calls(FILE *f)
{
    int first = 1;
    fprintf(f, ",\n\"node_calls\":[");
    for (uint32_t i = 1; i < node_calls_cap && i < nnodes; i++) {
        uint64_t any_calls = 0;
        for (int ph = 0; ph < NPHASES; ph++) {
            any_calls |= node_calls[i][ph];
        }
        if (!any_calls) {
            continue;
        }
        fprintf(f, "%s\n[%u,[", first ? "" : ",", i);
        first = 0;
        for (int ph = 0; ph < NPHASES; ph++) {
            fprintf(f, "%s%" PRIu64, ph ? "," : "", node_calls[i][ph]);
        }
        fprintf(f, "]]");
    }
    fputc(']', f);
}

static void write_output(qemu_plugin_id_t id, void *udata)
{
    char *tmp;
    FILE *f;
    int first, ph;
    const struct totals *tot;
    (void)id;
    (void)udata;

    if (want_chains) {
        chains_finish();
        tot = &chains_tot;
        ph = phase;
    } else {
        tot = &flat.tot;
        ph = flat.phase;
    }
    if (!want_chains || want_check) {
        flat_finish();
    }
    if (!want_chains) {
        for (uint32_t i = 1; i < nfuncs; i++) {
            memcpy(funcs[i].insns, flat.fn[i].res.insns, sizeof(funcs[i].insns));
            memcpy(funcs[i].entries, flat.fn[i].res.entries, sizeof(funcs[i].entries));
        }
    }
    tmp = malloc(strlen(out_path) + 8);
    sprintf(tmp, "%s.tmp", out_path);
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "kprofile: cannot write %s: %s\n", tmp, strerror(errno));
        free(tmp);
        return;
    }
    fprintf(f, "{\"backend\":\"kprofile\",\"version\":1,\"mode\":\"%s\",\"phases\":[",
            want_chains ? "chains" : "flat");
    for (int p = 0; p < NPHASES; p++) {
        fprintf(f, "%s\"%s\"", p ? "," : "", phase_names[p]);
    }
    fprintf(f, "],\"phase_at_exit\":\"%s\",\"marks\":%d,\"base\":%" PRIu64 ",\n",
            phase_names[ph], nmarks, base);
    write_totals(f, tot);
    fprintf(f, ",\n");
    if (want_chains) {
        write_chains_part(f);
    } else {
        fprintf(f, "\"stack\":null,");
        write_flat_part(f);
    }
    fprintf(f, ",\n\"functions\":[");
    first = 1;
    for (uint32_t i = 1; i < nfuncs; i++) {
        if (!any(funcs[i].insns) && !any(funcs[i].entries)) {
            continue;
        }
        fprintf(f, "%s\n {\"id\":%u,\"name\":", first ? "" : ",", i);
        first = 0;
        json_str(f, funcs[i].name);
        fprintf(f, ",\"start\":%" PRIu64 ",\"end\":%" PRIu64 ",\"insns\":", funcs[i].start,
                funcs[i].end);
        json_phases(f, funcs[i].insns);
        fprintf(f, ",\"entries\":");
        json_phases(f, funcs[i].entries);
        fputc('}', f);
    }
    fprintf(f, "],\n\"nodes\":[");
    first = 1;
    for (uint32_t i = 1; want_chains && i < nnodes; i++) {
        fprintf(f, "%s\n[%u,%u,%u,", first ? "" : ",", i, nodes[i].parent, nodes[i].func);
        first = 0;
        json_phases(f, nodes[i].insns);
        fputc(']', f);
    }
    fprintf(f, "]");
    if (want_node_calls) {
        write_node_calls(f);
    }
    if (want_check) {
        fprintf(f, ",\n");
        write_check(f);
    }
    fprintf(f, "}\n");
    if (fclose(f) != 0 || rename(tmp, out_path) != 0) {
        fprintf(stderr, "kprofile: cannot write %s: %s\n", out_path, strerror(errno));
    }
    free(tmp);
}

/* ---------------------------------------------------------------- install */

static int on_off(const char *arg, const char *key, int *value)
{
    size_t k = strlen(key);
    if (strncmp(arg, key, k) != 0 || arg[k] != '=') {
        return 0;
    }
    if (strcmp(arg + k + 1, "on") == 0) {
        *value = 1;
    } else if (strcmp(arg + k + 1, "off") == 0) {
        *value = 0;
    } else {
        return -1;
    }
    return 1;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *ranges = NULL;

    for (int i = 0; i < argc; i++) {
        int r = 0;
        if (strncmp(argv[i], "ranges=", 7) == 0) {
            ranges = argv[i] + 7;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else if ((r = on_off(argv[i], "chains", &want_chains)) ||
                   (r = on_off(argv[i], "runs", &use_runs)) ||
                   (r = on_off(argv[i], "check", &want_check)) ||
                   (r = on_off(argv[i], "node_calls", &want_node_calls))) {
            if (r < 0) {
                fprintf(stderr, "kprofile: '%s': the value is on or off\n", argv[i]);
                return -1;
            }
        } else {
            fprintf(stderr, "kprofile: unknown argument '%s' (known: ranges=FILE, out=FILE, "
                    "chains=on|off, runs=on|off, check=on|off, node_calls=on|off)\n", argv[i]);
            return -1;
        }
    }
    if (!out_path || !ranges) {
        fprintf(stderr, "kprofile: needs ranges=FILE and out=FILE\n");
        return -1;
    }
    if (!want_chains && (want_check || !use_runs || want_node_calls)) {
        fprintf(stderr, "kprofile: check=, runs= and node_calls= go with chains=on\n");
        return -1;
    }
    if (info->system_emulation && info->system.max_vcpus > 1) {
        fprintf(stderr, "kprofile: profiles one vCPU only (got -smp %d)\n",
                info->system.max_vcpus);
        return -1;
    }
    if (getenv("KPROFILE_DEBUG")) {
        debug_left = atoi(getenv("KPROFILE_DEBUG"));
    }
    if (load_ranges(ranges) < 0) {
        return -1;
    }
    if (!want_chains || want_check) {
        flat_init();
    }
    if (want_chains) {
        chains_init();
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, write_output, NULL);
    return 0;
}
