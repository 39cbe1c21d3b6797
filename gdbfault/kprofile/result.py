"""What the kernel-profile plugin says, as a profile dict (schema "gdbfault.profile/1").

The dict's keys:

  kernel, workload, mode, tool   what was run, as in a RunResult
  guest       the workload's own GDBFAULT-RESULT summary
  iterations  the guest's iteration count (per-iteration figures divide by it)
  functions   [{symbol, address, size, instructions, entries, load,
                per_iteration, inclusive, aliases}] for the workload window,
              most instructions first (load = instructions / size in bytes,
              readprofile's "load")
  total       {kernel, user, boot, setup, exit}: instructions in the
              workload window (kernel, user), before the workload's first
              instruction (boot), and in the workload outside its measured
              loop (setup: entry to the first rdtsc; exit: after the second)
  chains      whether call chains were kept (the plugin's chains=on): without
              them `folded` is [] and each function's `inclusive` is None
  folded      [[stack "a;b;c", instructions]] kernel call chains in the window
  boot_functions   the boot's top functions, [{symbol, instructions}]
  accounting  kernel + user against the guest's own cycle count
  stack       the shadow call stack's health (mismatched returns, overflow)

The workload window is exactly the guest's measured loop: its two rdtsc
instructions (found in the workload's rt_main) are the plugin's phase marks,
so under -icount shift=0 kernel + user equals the guest's `cycles` up to one
instruction per translation block left early (a faulting instruction counts
for its attempt, which icount does not count).
"""
from gdbfault.machine.plugins import PluginResultError, read_plugin_json

__all__ = ["SCHEMA", "PROFILE_PHASES", "read_kprofile_result", "build_profile"]

SCHEMA = "gdbfault.profile/1"
RESULT_VERSION = 1
# The plugin's counts per phase, cut at the workload marks (ranges.workload_marks).
PROFILE_PHASES = ("boot", "setup", "workload", "exit")


def _bad(path, what):
    return PluginResultError(f"kernel-profile result {path} is malformed: {what}")


def read_kprofile_result(path):
    """The plugin's JSON, checked; PluginResultError when missing or corrupt."""
    data = read_plugin_json(path, "kernel-profile result")
    if data.get("backend") != "kprofile" \
            or data.get("version") != RESULT_VERSION:
        raise _bad(path, "not a kprofile version-1 result")
    for key in ("user", "unknown_kernel", "left_early"):
        if not (isinstance(data.get(key), list) and len(data[key]) == len(PROFILE_PHASES)):
            raise _bad(path, f"'{key}' is not one count per phase")
    if not isinstance(data.get("functions"), list) or not isinstance(data.get("nodes"), list):
        raise _bad(path, "'functions' or 'nodes' is not a list")
    return data


def _folded(data, phase, names):
    """[(stack, count)] for one phase from the plugin's call tree nodes."""
    nodes = {n[0]: (n[1], n[2], n[3][phase]) for n in data["nodes"]}
    paths = {}

    def path_of(ix):
        if ix not in paths:
            parent, func, _ = nodes[ix]
            head = path_of(parent) + ";" if parent in nodes else ""
            paths[ix] = head + names.get(func, f"[func {func}]")
        return paths[ix]
    rows = [(path_of(ix), count) for ix, (_, _, count) in nodes.items() if count]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def _accounting(counted, cycles, left, inexact):
    """kernel + user against the guest's cycles (one instruction = one cycle).

    The window is the guest's own (its two rdtsc), so the only differences
    are blocks left early. A block counted per instruction that faults
    counts the faulting instruction's attempt, which -icount does not (+1
    each, `left_early_blocks`). A block counted whole that was left before
    its end (`inexact_blocks`) is +1 when it was its last instruction that
    did not complete: what QEMU does under -icount with an I/O instruction
    (an `out` to the serial port, say) that is not alone at the end of its
    block — the attempt is undone and the instruction runs again in a block
    of its own; seen on x86_64 kernels (~10 per iteration), never on the lab
    kernel. `unexplained` is what these do not account for: 0 when every
    such block was cut at its last instruction (`exact`); a block cut
    earlier (a kernel fault outside its exception table) adds its unexecuted
    rest, up to 511, and a fault on a block's last instruction, which looks
    finished, adds 1 (rare).
    """
    if cycles is None:
        return {"counted": counted, "guest_cycles": None, "left_early_blocks": left,
                "inexact_blocks": inexact, "difference": None, "unexplained": None, "exact": None,
                "agree": None}
    diff = counted - cycles
    # agree: what is left is no more than the inexact blocks' unexecuted
    # rests (at most 511 each: QEMU's largest block is 512 instructions) and
    # the rare fault on a block's last instruction
    slack = 511 * inexact + max(1, left // 100000)
    return {"counted": counted, "guest_cycles": cycles, "left_early_blocks": left,
            "inexact_blocks": inexact, "difference": diff, "unexplained": diff - left - inexact,
            "exact": diff == left + inexact, "agree": 0 <= diff - left <= slack}


def _stack_health(stack, phase):
    """The shadow stack's counters for one phase (the plugin keeps one per phase)."""
    out = {}
    for key, value in stack.items():
        out[key] = value[phase] if isinstance(value, list) else value
    return out


def build_profile(data, guest, meta, funcs, top_boot=15):
    """The profile dict (module docstring) from the plugin's result."""
    w = PROFILE_PHASES.index("workload")
    by_start = {f["address"]: f for f in funcs}
    names = {f["id"]: f["name"] for f in data["functions"]}
    iterations = (guest or {}).get("iterations") or meta.get("iterations")
    chains = data.get("mode", "chains") == "chains"     # results from before the flat mode had chains
    folded = _folded(data, w, names)
    inclusive = {}
    for stack, count in folded:
        for name in set(stack.split(";")):
            inclusive[name] = inclusive.get(name, 0) + count
    rows = []
    kernel_total = 0
    for f in data["functions"]:
        n = f["insns"][w]
        kernel_total += n
        if not n and not f["entries"][w]:
            continue
        size = f["end"] - f["start"]
        info = by_start.get(f["start"], {})
        rows.append({"symbol": f["name"], "address": f["start"] or None, "size": size or None,
                     "instructions": n, "entries": f["entries"][w],
                     "load": round(n / size, 4) if size else None,
                     "per_iteration": round(n / iterations, 3) if iterations else None,
                     "inclusive": inclusive.get(f["name"], n) if chains else None,
                     "aliases": info.get("aliases", [])})
    rows.sort(key=lambda r: (-r["instructions"], r["symbol"]))
    user = data["user"]

    def phase_total(p):
        return user[p] + sum(f["insns"][p] for f in data["functions"])
    boot_rows = sorted(({"symbol": f["name"], "instructions": f["insns"][0]}
                        for f in data["functions"] if f["insns"][0]),
                       key=lambda r: -r["instructions"])[:top_boot]
    total = {"kernel": kernel_total, "user": user[w], "boot": phase_total(0),
             "setup": phase_total(1), "exit": phase_total(3)}
    accounting = _accounting(kernel_total + user[w], (guest or {}).get("cycles"),
                             data["left_early"][w], data.get("inexact_left_early", [0] * 4)[w])
    return {"schema": SCHEMA, **meta, "guest": guest, "iterations": iterations, "chains": chains,
            "functions": rows, "total": total, "folded": [list(r) for r in folded],
            "boot_functions": boot_rows, "accounting": accounting,
            "phase_reached": data.get("phase_at_exit"),
            "stack": _stack_health(data.get("stack") or {}, w),
            "unknown_kernel": data["unknown_kernel"][w]}
