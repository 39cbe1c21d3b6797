/*
 * kprofile.c — gdbfault's kernel profiler: a QEMU TCG plugin (plugin API
 * version 1, as in QEMU 7.2) that attributes every executed guest
 * instruction to the kernel function containing it, per phase of the run,
 * and keeps a shadow call stack for inclusive call chains.
 *
 * Usage:
 *   qemu-system-i386 ... -plugin build/libkprofile.so,ranges=FILE,out=FILE[,chains=off][,node_calls=on]
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
 *   mark <hex address> <before|after>   phase boundaries, in order: the i-th
 *                                   mark ends phase i (boot, setup, workload)
 *
 * Counting model (one vCPU)
 *   - At translation each translation block (TB) gets a descriptor: its
 *     instructions grouped by containing function, its end address, how its
 *     last instruction leaves (call, ret, iret, jump and target), and any
 *     phase mark inside it.  A callback (no registers) on the TBs that can
 *     change the stack or phase attributes the *previous* such TB; TBs that
 *     may fault mid-way (user mode, or holding an __ex_table instruction)
 *     also bump a global counter per instruction, so the callback knows
 *     how many of their instructions started: a TB left early (a
 *     page-faulting access restoring state mid-TB) is attributed only the
 *     instructions that started, the faulting one included.  QEMU's -icount
 *     does not count that faulting attempt, so the plugin's totals exceed
 *     the guest's rdtsc difference by exactly the number of such TBs
 *     (reported).  Other TBs add one at their last instruction: one left
 *     early is counted whole and reported as inexact.
 *   - Straight-line code inside one function ("chains", see chain_insns)
 *     has no callback at all: inline adds only, attributed at the next
 *     callback.  `chains=off` gives every TB a callback (same results).
 *   - Phases advance at marks: an "after" mark ends its phase right after
 *     the marked instruction (the workload's rdtsc, whose value includes
 *     itself), a "before" mark right before it (the workload's entry point).
 *   - Shadow call stack, updated on each TB transition P -> T:
 *       T at or above base entered from user mode, or T the start of an
 *       entry function not reached by a direct call/jump  -> push a trap frame;
 *       P ended in a call (and T is not a trap)           -> push a call frame
 *                                                          (return = P's end);
 *       P ended in ret   -> pop down to the frame returning to T (or one);
 *       P ended in iret  -> pop down to and including the newest trap frame;
 *       T in user mode   -> the stack is empty.
 *     Frames index a call tree (a trie of function ids); each TB's
 *     instructions go to the tree node of the current stack plus the TB's
 *     own function as leaf, giving folded "a;b;c count" lines.
 *
 * node_calls=on (opt-in, for `gdbfault inspect`'s per-fault call tree): also
 * count how often each call-tree node was entered (each push: a call, or a
 * trap frame), written as an extra top-level key "node_calls": [[node id,
 * [count per phase]], ...] (nodes entered at least once).  Nothing else in
 * the output or the counting changes; without the option the output is
 * byte-for-byte what it was.
 *
 * Output: JSON written to "out" at exit, via a temporary file renamed into
 * place.  KPROFILE_DEBUG=N in QEMU's environment prints the first N block
 * transitions of the workload phase to stderr (for checking the stack).
 * This file is gdbfault's own code.
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
#define MAX_DEPTH   64
#define F_USER      0           /* pseudo-function: user mode */
#define F_UNKNOWN   1           /* pseudo-function: kernel, no symbol */
#define NO_TARGET   UINT64_MAX

static const char *const phase_names[NPHASES] = { "boot", "setup", "workload", "exit" };

enum last_kind { L_OTHER, L_CALL, L_RET, L_IRET, L_JUMP, L_INDIRECT_JUMP, L_TRAP };

struct func {
    uint64_t start, end;
    int entry;
    char *name;
    uint64_t insns[NPHASES];
    uint64_t entries[NPHASES];
};

struct group { uint32_t func; uint32_t count; };

/* One per translated TB, 64-byte aligned, the fields the common case reads
 * first (one cache line); the callback's udata is its address tagged with
 * TAG_USER / TAG_ENTRY, so the common case never reads the new TB's own. */
#define TAG_USER    ((uintptr_t)1)
#define TAG_ENTRY   ((uintptr_t)2)
#define TAG_MASK    ((uintptr_t)63)

struct tb_desc {
    uint32_t n;                 /* instructions */
    uint32_t func0;             /* groups[0].func */
    uint32_t cache_top, cache_leaf;     /* call-tree node of group 0 under cache_top */
    uint8_t simple;             /* plain, and no call/ret/iret/trap at its end */
    uint8_t plain;              /* one kernel function, counted whole, no mark */
    uint8_t chain;              /* no callback: counted inline (see chains) */
    uint32_t end_func;          /* function of the fall-through address */
    uint8_t kind;               /* enum last_kind */
    uint8_t user;               /* starts below base */
    uint8_t exact;              /* counted per instruction (may fault mid-TB) */
    uint8_t entry_start;        /* starts an entry (vector) function */
    uint64_t start, end;        /* [start, end): the TB's bytes */
    uint64_t target;            /* direct branch/call target or NO_TARGET */
    uint32_t call_top, call_func, call_node;  /* last call made from here: its frame's node */
    int8_t mark;                /* index of a mark inside, or -1 */
    uint32_t mark_insn;         /* the marked instruction's index */
    uint32_t mark_split;        /* instructions before the boundary */
    uint32_t ngroups;
    struct group groups[];
};

struct node {
    uint32_t parent, func;
    uint32_t leaf_cache_func, leaf_cache_node;   /* last leaf child looked up */
    uint64_t insns[NPHASES];
};

struct frame { uint32_t node; uint32_t ret_func; uint64_t ret; int trap; };

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
static char *out_path;

static int phase;
static uint64_t insn_counter;          /* exact TBs: +1 per instruction started */
static uint64_t done_counter;          /* other TBs: +1 at their last instruction */
static uint64_t counter_at_prev, done_at_prev;   /* both at the previous TB's entry */
static uint64_t *uaccess;              /* sorted: kernel instructions allowed to fault */
static size_t nuaccess, capuaccess;
static uint64_t inexact_left_early[NPHASES];
/* Chains: a TB inside one function, not at its start, that can only go on
 * within that function (fall-through and direct target there, no
 * call/ret/iret/trap) has no callback; it adds its instructions, one TB (plus
 * 2^32 if it has more than one instruction, taken back by its last one) and
 * its function id to these.  Between two callbacks such TBs form one run in
 * one function F = chain_fsum / TB count, under an unchanged stack, since
 * entering a function at its start, calls, returns and traps all reach a
 * TB with a callback. */
static int use_chains = 1;
static uint64_t chain_insns, chain_tbs, chain_fsum;
#define CHAIN_TB_MASK   ((uint64_t)0xffffffffu)
#define CHAIN_OPEN      ((uint64_t)1 << 32)
static struct tb_desc *prev;
static uint64_t user_insns[NPHASES], unknown_insns[NPHASES];
static uint64_t left_early[NPHASES];
static uint64_t ret_mismatch[NPHASES], iret_mismatch[NPHASES], overflow_drops[NPHASES],
    unbalanced_to_user[NPHASES];
static int max_depth_seen;
static int debug_left;
/* node_calls=on: entries per call-tree node and phase, indexed by node id,
 * grown on demand (see note_node_call) */
static int want_node_calls;
static uint64_t (*node_calls)[NPHASES];
static uint32_t node_calls_cap;

static struct frame stack[MAX_DEPTH];
static int depth;
static int overflow;                   /* pushes beyond MAX_DEPTH not kept */

static struct node *nodes;
static uint32_t nnodes, capnodes;
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
    nodes[ix].leaf_cache_func = UINT32_MAX;
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
        while (cap <= node) {
            cap *= 2;
        }
        node_calls = realloc(node_calls, cap * sizeof(*node_calls));
        memset(node_calls + node_calls_cap, 0, (cap - node_calls_cap) * sizeof(*node_calls));
        node_calls_cap = cap;
    }
    node_calls[node][phase]++;
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
                    "ENTRY NAME' or 'mark ADDR before|after' (at most %d marks)\n",
                    path, lineno, MAX_MARKS);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    qsort(uaccess, nuaccess, sizeof(*uaccess), cmp_u64);
    /* Without marks everything is one phase: the "workload". */
    phase = nmarks ? 0 : 2;
    long_mode = base > 0xffffffffu;
    addr_mask = long_mode ? UINT64_MAX : 0xffffffffu;
    return 0;
}

/* ------------------------------------------------------------ decoding */

static uint64_t rd32(const uint8_t *p)
{
    return (uint64_t)(int64_t)(int32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
}

/* How an instruction leaves the straight line, and its direct target. */
static enum last_kind classify(const uint8_t *b, size_t len, uint64_t next, uint64_t *target)
{
    size_t i = 0;
    *target = NO_TARGET;
    while (i < len && (b[i] == 0x66 || b[i] == 0x67 || b[i] == 0xf2 || b[i] == 0xf3 ||
                       b[i] == 0x2e || b[i] == 0x36 || b[i] == 0x3e || b[i] == 0x26 ||
                       b[i] == 0x64 || b[i] == 0x65 || b[i] == 0xf0 ||
                       /* REX (64-bit code only; inc/dec in 32-bit code) */
                       (long_mode && (b[i] & 0xf0) == 0x40 && i + 1 < len))) {
        i++;
    }
    if (i >= len) {
        return L_OTHER;
    }
    uint8_t op = b[i];
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
    case 0xeb: case 0xe0: case 0xe1: case 0xe2: case 0xe3:
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
            return L_JUMP;
        }
        return L_OTHER;
    }
}

/* ------------------------------------------------------------ execution */

/* The tree node of instructions of function f run under the current stack:
 * the top frame's node, or its child f when f is not the frame's own
 * function (reached by a jump or a fall-through, e.g. ret_from_exception
 * after page_fault). */
static uint32_t leaf_node(uint32_t f)
{
    uint32_t nd = depth ? stack[depth - 1].node : 0;
    struct node *np = &nodes[nd];
    if (np->func == f) {
        return nd;
    }
    if (np->leaf_cache_func != f) {
        uint32_t leaf = child(nd, f);
        np = &nodes[nd];                    /* child() may move nodes */
        np->leaf_cache_func = f;
        np->leaf_cache_node = leaf;
    }
    return np->leaf_cache_node;
}

/* caller: the function the call instruction is in (UINT32_MAX for a trap);
 * from: the calling TB, whose descriptor caches the node */
static void push(uint32_t func, uint64_t ret, int trap, uint32_t caller, struct tb_desc *from)
{
    uint32_t ret_func = from && !trap ? from->end_func : F_UNKNOWN;
    uint32_t top = depth ? stack[depth - 1].node : 0, node;
    funcs[func].entries[phase]++;
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
    depth++;
    if (depth > max_depth_seen) {
        max_depth_seen = depth;
    }
}

static void pop_ret(uint64_t to)
{
    if (overflow) {
        overflow--;
        return;
    }
    for (int i = depth - 1; i >= 0 && i >= depth - 8; i--) {
        if (stack[i].ret == to) {
            depth = i;
            return;
        }
        if (stack[i].trap) {
            break;              /* never return past a trap frame */
        }
    }
    ret_mismatch[phase]++;
    if (depth && !stack[depth - 1].trap) {
        depth--;
    }
}

/* A return whose target was not seen (it went on in a chain in function f):
 * pop down to the frame returning into f. */
static void pop_ret_func(uint32_t f)
{
    if (overflow) {
        overflow--;
        return;
    }
    for (int i = depth - 1; i >= 0 && i >= depth - 8; i--) {
        if (stack[i].ret_func == f) {
            depth = i;
            return;
        }
        if (stack[i].trap) {
            break;
        }
    }
    ret_mismatch[phase]++;
    if (depth && !stack[depth - 1].trap) {
        depth--;
    }
}

static void pop_iret(void)
{
    overflow = 0;
    for (int i = depth - 1; i >= 0; i--) {
        if (stack[i].trap) {
            depth = i;
            return;
        }
    }
    if (depth) {
        iret_mismatch[phase]++;
    }
    depth = 0;
}

/* Attribute instructions [from, to) of TB d to the current phase. */
/* leaf_node() for group g of TB d, cached in d for the first group */
static inline uint32_t tb_leaf(struct tb_desc *d, uint32_t g, uint32_t f)
{
    uint32_t top = depth ? stack[depth - 1].node : 0;
    if (g != 0) {
        return leaf_node(f);
    }
    if (d->cache_top != top) {
        d->cache_leaf = leaf_node(f);
        d->cache_top = top;
    }
    return d->cache_leaf;
}

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
            user_insns[phase] += c;
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
            left_early[phase]++;
        } else {
            inexact_left_early[phase]++;
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

/* The chain run since the last callback, if any: attributed to its
 * function under the current stack; returns that function or UINT32_MAX. */
static uint32_t chain_function(void)
{
    uint64_t tbs = chain_tbs & CHAIN_TB_MASK;
    if (tbs <= 1) {
        return tbs ? (uint32_t)chain_fsum : UINT32_MAX;
    }
    return (uint32_t)(chain_fsum / tbs);
}

static void flush_chain(uint32_t f)
{
    inexact_left_early[phase] += chain_tbs >> 32;
    uint32_t leaf = leaf_node(f);       /* first: it may move nodes */
    nodes[leaf].insns[phase] += chain_insns;
    chain_insns = chain_tbs = chain_fsum = 0;
}

static void stack_update(struct tb_desc *p, struct tb_desc *t, int completed);

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    struct tb_desc *t = (struct tb_desc *)((uintptr_t)udata & ~TAG_MASK);
    struct tb_desc *p = prev;
    int completed = 0;
    (void)vcpu_index;
    if (p && p->plain) {
        /* kernel code of one function: its node under the current stack
         * (flat per-function counts are the call tree's, summed at exit) */
        completed = p->n == 1 || done_counter != done_at_prev;
        if (!completed) {
            inexact_left_early[phase]++;
        }
        uint32_t leaf = tb_leaf(p, 0, p->func0);    /* first: it may move nodes */
        nodes[leaf].insns[phase] += p->n;
        if (p->simple && !((uintptr_t)udata & (TAG_USER | TAG_ENTRY))) {
            /* the common case: no stack change (a chain after p, if any,
             * ran under the same stack) */
            if (chain_tbs) {
                flush_chain(chain_function());
            }
            prev = t;
            done_at_prev = done_counter;
            counter_at_prev = insn_counter;
            return;
        }
    } else if (p) {
        uint32_t started = prev_started(&completed);
        account_prev(started, completed);
    }
    stack_update(p, t, completed);
}

/* The shadow stack after the transition p -> t (p ran to its end if completed). */
static void __attribute__((noinline)) stack_update(struct tb_desc *p, struct tb_desc *t, int completed)
{
    uint32_t cf = chain_function();
    if (cf != UINT32_MAX) {
        /* p -> (a chain in function cf) -> t */
        if (p && !p->user && completed) {
            if (p->kind == L_CALL) {
                push(p->target != NO_TARGET ? func_of(p->target) : cf, p->end, 0,
                     p->groups[p->ngroups - 1].func, p);
            } else if (p->kind == L_RET) {
                pop_ret_func(cf);
            } else if (p->kind == L_IRET) {
                pop_iret();
            }
        }
        flush_chain(cf);
        if (t->user) {
            unbalanced_to_user[phase] += depth || overflow;
            depth = 0;
            overflow = 0;
        } else if (t->entry_start && !(cf == t->func0 && funcs[cf].start == t->start)) {
            push(t->func0, 0, 1, UINT32_MAX, t);
        }
        prev = t;
        counter_at_prev = insn_counter;
        done_at_prev = done_counter;
        return;
    }
    if (debug_left > 0 && phase == 2 && p) {
        debug_left--;
        fprintf(stderr, "P %#" PRIx64 "-%#" PRIx64 " n=%u kind=%d tgt=%#" PRIx64 " started=%" PRIu64
                " -> T %#" PRIx64 " (%s) depth=%d\n", p->start, p->end, p->n, p->kind, p->target,
                insn_counter - counter_at_prev, t->start, funcs[t->ngroups ? t->groups[0].func : 0].name, depth);
    }
    if (p) {
        uint32_t tf = t->ngroups ? t->groups[0].func : F_USER;
        int direct = completed && p->target == t->start &&
                     (p->kind == L_CALL || p->kind == L_JUMP);
        int trap = !t->user && (p->user || (t->entry_start && !direct));
        if (p->user) {
            /* user-mode calls and returns are not the kernel's stack */
        } else if (completed && p->kind == L_CALL) {
            if (!trap) {
                push(tf, p->end, 0, p->groups[p->ngroups - 1].func, p);
            } else if (p->target != NO_TARGET) {
                push(func_of(p->target), p->end, 0, p->groups[p->ngroups - 1].func, NULL);   /* an interrupt before the callee ran */
            }
        } else if (completed && p->kind == L_RET) {
            pop_ret(t->start);
        } else if (completed && p->kind == L_IRET) {
            pop_iret();
        }
        if (t->user) {
            if (depth || overflow) {
                unbalanced_to_user[phase]++;
            }
            depth = 0;
            overflow = 0;
        } else if (trap) {
            push(tf, 0, 1, UINT32_MAX, t);
        }
    }
    prev = t;
    counter_at_prev = insn_counter;
    done_at_prev = done_counter;
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct tb_desc *d;
    (void)id;

    if (n == 0) {
        return;
    }
    size_t bytes = (sizeof(*d) + n * sizeof(struct group) + 63) & ~(size_t)63;
    d = aligned_alloc(64, bytes);
    memset(d, 0, bytes);
    d->n = (uint32_t)n;
    d->mark = -1;
    d->target = NO_TARGET;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t va = qemu_plugin_insn_vaddr(insn);
        size_t sz = qemu_plugin_insn_size(insn);
        uint32_t f = func_of(va);

        if (i == 0) {
            d->start = va;
            d->user = va < base;
            d->exact = d->user;
        }
        if (d->ngroups && d->groups[d->ngroups - 1].func == f) {
            d->groups[d->ngroups - 1].count++;
        } else {
            d->groups[d->ngroups].func = f;
            d->groups[d->ngroups].count = 1;
            d->ngroups++;
        }
        for (int m = 0; m < nmarks; m++) {
            if (mark_addr[m] == va) {
                d->mark = (int8_t)m;
                d->mark_insn = (uint32_t)i;
                d->mark_split = (uint32_t)i + (mark_after[m] ? 1 : 0);
            }
        }
        if (i == n - 1) {
            const uint8_t *bytes = qemu_plugin_insn_data(insn);
            d->end = va + sz;
            d->kind = (uint8_t)classify(bytes, sz, d->end, &d->target);
        }
        if (!d->exact && is_uaccess(va)) {
            d->exact = 1;
        }
    }
    d->plain = !d->user && !d->exact && d->ngroups == 1 && d->mark < 0;
    d->simple = d->plain &&
                (d->kind == L_OTHER || d->kind == L_JUMP || d->kind == L_INDIRECT_JUMP);
    d->entry_start = !d->user && funcs[d->groups[0].func].entry &&
                     funcs[d->groups[0].func].start == d->start;
    d->cache_top = UINT32_MAX;
    d->call_top = UINT32_MAX;
    d->func0 = d->groups[0].func;
    d->end_func = func_of(d->end);
    d->chain = use_chains && d->plain && d->func0 != F_UNKNOWN && !d->entry_start &&
               d->start != funcs[d->func0].start && d->end_func == d->func0 &&
               (d->kind == L_OTHER ||
                (d->kind == L_JUMP && d->target != NO_TARGET && func_of(d->target) == d->func0));
    if (d->chain) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &chain_insns, n);
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &chain_tbs,
                                                 1 + (n > 1 ? CHAIN_OPEN : 0));
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &chain_fsum,
                                                 d->func0);
        if (n > 1) {
            qemu_plugin_register_vcpu_insn_exec_inline(qemu_plugin_tb_get_insn(tb, n - 1),
                                                       QEMU_PLUGIN_INLINE_ADD_U64, &chain_tbs,
                                                       (uint64_t)0 - CHAIN_OPEN);
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
                                         (void *)((uintptr_t)d | (d->user ? TAG_USER : 0) |
                                                  (d->entry_start ? TAG_ENTRY : 0)));
}

/* ----------------------------------------------------------------- output */

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

static void write_output(qemu_plugin_id_t id, void *udata)
{
    char *tmp;
    FILE *f;
    int first;
    (void)id;
    (void)udata;

    if (prev) {
        int finished;
        uint32_t started = prev_started(&finished);
        account_prev(started, 1);   /* the last TB: ran until QEMU stopped */
        (void)finished;
    }
    if (chain_function() != UINT32_MAX) {
        flush_chain(chain_function());
    }
    prev = NULL;
    /* flat counts: every kernel instruction went to a call-tree node of its
     * own function */
    for (uint32_t i = 1; i < nnodes; i++) {
        for (int ph = 0; ph < NPHASES; ph++) {
            funcs[nodes[i].func].insns[ph] += nodes[i].insns[ph];
        }
    }
    memcpy(unknown_insns, funcs[F_UNKNOWN].insns, sizeof(unknown_insns));
    tmp = malloc(strlen(out_path) + 8);
    sprintf(tmp, "%s.tmp", out_path);
    f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "kprofile: cannot write %s: %s\n", tmp, strerror(errno));
        free(tmp);
        return;
    }
    fprintf(f, "{\"backend\":\"kprofile\",\"version\":1,\"phases\":[");
    for (int p = 0; p < NPHASES; p++) {
        fprintf(f, "%s\"%s\"", p ? "," : "", phase_names[p]);
    }
    fprintf(f, "],\"phase_at_exit\":\"%s\",\"marks\":%d,\"base\":%" PRIu64 ",\n\"user\":",
            phase_names[phase], nmarks, base);
    json_phases(f, user_insns);
    fprintf(f, ",\"unknown_kernel\":");
    json_phases(f, unknown_insns);
    fprintf(f, ",\"left_early\":");
    json_phases(f, left_early);
    fprintf(f, ",\"inexact_left_early\":");
    json_phases(f, inexact_left_early);
    fprintf(f, ",\"insns_started\":%" PRIu64 ",\n\"stack\":{\"ret_mismatch\":", insn_counter);
    json_phases(f, ret_mismatch);
    fprintf(f, ",\"iret_mismatch\":");
    json_phases(f, iret_mismatch);
    fprintf(f, ",\"overflow\":");
    json_phases(f, overflow_drops);
    fprintf(f, ",\"to_user_unbalanced\":");
    json_phases(f, unbalanced_to_user);
    fprintf(f, ",\"max_depth\":%d,\"limit\":%d},\n\"functions\":[", max_depth_seen, MAX_DEPTH);
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
    for (uint32_t i = 1; i < nnodes; i++) {
        fprintf(f, "%s\n[%u,%u,%u,", first ? "" : ",", i, nodes[i].parent, nodes[i].func);
        first = 0;
        json_phases(f, nodes[i].insns);
        fputc(']', f);
    }
    fputc(']', f);
    if (want_node_calls) {
        write_node_calls(f);
    }
    fprintf(f, "}\n");
    if (fclose(f) != 0 || rename(tmp, out_path) != 0) {
        fprintf(stderr, "kprofile: cannot write %s: %s\n", out_path, strerror(errno));
    }
    free(tmp);
}

/* ---------------------------------------------------------------- install */

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *ranges = NULL;

    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "ranges=", 7) == 0) {
            ranges = argv[i] + 7;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        } else if (strcmp(argv[i], "chains=off") == 0) {
            use_chains = 0;             /* a callback for every TB (for checking) */
        } else if (strcmp(argv[i], "node_calls=on") == 0) {
            want_node_calls = 1;        /* also count entries per call-tree node */
        } else {
            fprintf(stderr, "kprofile: unknown argument '%s' (known: ranges=FILE, out=FILE)\n",
                    argv[i]);
            return -1;
        }
    }
    if (!out_path || !ranges) {
        fprintf(stderr, "kprofile: needs ranges=FILE and out=FILE\n");
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
    capnodes = 1024;
    nodes = calloc(capnodes, sizeof(*nodes));
    nnodes = 1;                         /* node 0: the root (empty stack) */
    nodes[0].func = UINT32_MAX;
    nodes[0].leaf_cache_func = UINT32_MAX;
    hash_cap = 4096;
    node_hash = calloc(hash_cap, sizeof(*node_hash));
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, write_output, NULL);
    return 0;
}
