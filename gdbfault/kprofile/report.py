"""Render a kernel profile (result.py's dict): table, JSON, CSV, markdown,
folded stacks, and a bar chart of the top functions.

The table mirrors readprofile's columns (count, function, load) with the
exact counts beside them; folded output is the `a;b;c count` format that
flamegraph.pl, inferno and speedscope read as it is.
"""
import csv
import io
import json
from pathlib import Path

from tabulate import tabulate

from gdbfault.base.errors import GdbfaultError
from gdbfault.views.report import save_json

__all__ = ["FORMATS", "render_profile", "plot_kernel_profile", "profile_changes", "render_changes",
           "save_kernel_profile"]

FORMATS = ("table", "json", "csv", "markdown", "folded")
CSV_FIELDS = ("symbol", "address", "size", "instructions", "percent_kernel", "per_iteration",
              "entries", "load", "inclusive", "inclusive_per_iteration")
ICOUNT_NOTE = ("(guest instructions under -icount shift={shift}{cycles}: exact, not timer samples; "
               "readprofile, 1997: 204 page_fault 12.75 · 439 ret_with_reschedule 9.34)")


def save_kernel_profile(profile, path):
    """Write a profile dict as JSON (atomically, as a run file is written)."""
    save_json(profile, path)


def _label(profile):
    k = profile.get("kernel") or {}
    if k.get("lab"):
        return f"lab kernel ({k.get('variant')})"
    return Path(k.get("path", "?")).name


def _machine(profile):
    """" · x86_64 · qemu-system-x86_64 -cpu qemu64" (profiles saved before it was noted: nothing)."""
    arch, cpu = (profile.get("kernel") or {}).get("arch"), (profile.get("mode") or {}).get("cpu")
    emulator = (profile.get("tool") or {}).get("emulator")
    return f" · {arch} · {emulator}" + (f" -cpu {cpu}" if cpu else "") if arch and emulator else ""


def _abi(profile):
    w = profile.get("workload") or {}
    if w.get("ia32_emulation"):
        return " (i386 binary under the kernel's IA32 emulation)"
    return " (native x86_64 binary)" if w.get("abi") == "x86_64" else ""


def _rows(profile, top):
    kernel = profile["total"]["kernel"] or 1
    iterations = profile.get("iterations")
    rows = []
    for f in profile["functions"][:top] if top else profile["functions"]:
        rows.append({"symbol": f["symbol"],
                     "address": f"{f['address']:#x}" if f.get("address") is not None else "",
                     "size": f.get("size"), "instructions": f["instructions"],
                     "percent_kernel": round(100.0 * f["instructions"] / kernel, 2),
                     "per_iteration": f.get("per_iteration"), "entries": f["entries"],
                     "load": f.get("load"), "inclusive": f.get("inclusive"),
                     "inclusive_per_iteration": round(f["inclusive"] / iterations, 3)
                     if iterations and f.get("inclusive") is not None else None})
    return rows


def _n(v):
    return "-" if v is None else f"{v:,}"


def _f(v, digits=2):
    return "-" if v is None else f"{v:,.{digits}f}"


def _totals_line(profile):
    """kernel/user split of the measured loop, and what is kept apart."""
    t, n = profile["total"], profile.get("iterations")
    window = t["kernel"] + t["user"]

    def part(x):
        share = f"{100.0 * x / window:.1f}%" if window else "-"
        return f"{_n(x)} ({share}" + (f", {x / n:,.1f} per iteration)" if n else ")")
    return (f"kernel instructions in the workload: {part(t['kernel'])} · user: {part(t['user'])}"
            f" · boot (apart): {_n(t['boot'])} · workload setup/exit outside its loop (apart): "
            f"{_n(t.get('setup'))}/{_n(t.get('exit'))}")


def _summary_lines(profile):
    acc = profile.get("accounting") or {}
    lines = []
    if acc.get("guest_cycles") is not None:
        how = "exactly" if acc["exact"] else f"unexplained {acc['unexplained']:+,}"
        restarted = (f" + {_n(acc['inexact_blocks'])} instructions run twice (QEMU left each of these kernel "
                     "blocks at its last instruction and ran it again alone: icount's I/O restarts)"
                     if acc["inexact_blocks"] else "")
        lines.append(f"kernel + user = {_n(acc['counted'])} = the guest's cycles {_n(acc['guest_cycles'])}"
                     f" + {_n(acc['left_early_blocks'])} faulting instructions counted at their first "
                     f"attempt{restarted} ({how})")
    st = profile.get("stack") or {}
    if st.get("ret_mismatch") or st.get("overflow") or st.get("iret_mismatch"):
        # x86_64 kernels built with retpolines call through thunks that `ret` to the call's
        # target, not to their caller: a call/ret pair that does not nest, seen as a mismatch
        thunks = any(f["symbol"].startswith("__x86_indirect_thunk") for f in profile["functions"])
        lines.append(f"shadow call stack: {st.get('ret_mismatch', 0)} unmatched returns, "
                     f"{st.get('iret_mismatch', 0)} unmatched irets, {st.get('overflow', 0)} frames beyond "
                     f"depth {st.get('limit')}: call chains near them may be off"
                     + (" (expected with the kernel's retpoline thunks, __x86_indirect_thunk_*, which return to "
                        "the call's target)" if thunks else ""))
    shift = (profile.get("mode") or {}).get("icount_shift") or 0
    lines.append(ICOUNT_NOTE.format(shift=shift, cycles=", one instruction = one cycle" if not shift else
                                    f", {2 ** shift} cycles of the guest's rdtsc per instruction"))
    return lines


def render_profile(profile, fmt="table", top=20):
    """The profile as text in one of FORMATS."""
    if fmt == "json":
        return json.dumps(profile, indent=1) + "\n"
    if fmt == "folded":
        if not profile.get("chains", True):
            raise GdbfaultError("folded stacks need call chains: this profile was made without them",
                                "run `gdbfault profile --chains` (or --format folded)")
        return "".join(f"{stack} {count}\n" for stack, count in profile["folded"])
    rows = _rows(profile, top)
    if fmt == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return out.getvalue()
    if fmt not in ("table", "markdown"):
        raise GdbfaultError(f"unknown format '{fmt}'", f"choose one of: {', '.join(FORMATS)}")
    g = profile.get("guest") or {}
    head = (f"kernel profile: {_label(profile)}{_machine(profile)}, workload {profile['workload']['name']}"
            f" × {_n(profile.get('iterations'))}{_abi(profile)}, the guest's measured loop"
            f" · top {len(rows)} of {len(profile['functions'])} functions")
    chains = profile.get("chains", True)
    # the last column: with call chains the inclusive cost per iteration; without, own
    # instructions per entry (what a flat profile can say exactly, nothing made up)
    table = [[r["symbol"], _n(r["instructions"]), f"{r['percent_kernel']:.1f}%", _f(r["per_iteration"]),
              _n(r["entries"]), _f(r["load"], 2),
              _f(r["inclusive_per_iteration"]) if chains else
              _f(r["instructions"] / r["entries"] if r["entries"] else None)] for r in rows]
    text = tabulate(table, headers=["function", "instructions", "% kernel", "per iter", "entries", "load",
                                    "incl./iter" if chains else "per entry"],
                    tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True,
                    colalign=("left",) + ("right",) * 6)
    lines = [head, _totals_line(profile), "", text, ""]
    lines += _summary_lines(profile)
    lines.append("load = instructions ÷ function length in bytes (readprofile's column); "
                 + ("incl./iter = with everything it calls" if chains else
                    "per entry = own instructions ÷ entries (with what it calls, and call chains: --chains)"))
    if g.get("cycles_per_iteration") is not None:
        lines.append(f"guest's own summary: {g.get('cycles_per_iteration')} cycles per iteration, "
                     f"{g.get('sigsegv')} SIGSEGV, {g.get('efault')} EFAULT")
    if fmt == "markdown":
        lines = [lines[0], "", lines[1], "", lines[3], ""] + [f"- {l}" for l in lines[5:]]
    return "\n".join(lines) + "\n"


def plot_kernel_profile(profile, path, top=15):
    """A horizontal bar chart of the top functions' instructions per iteration."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GdbfaultError("--plot needs matplotlib", "pip install matplotlib")
    rows = [r for r in _rows(profile, top) if r["instructions"]]
    if not rows:
        raise GdbfaultError("nothing to plot: no kernel instructions in the workload window")
    per_iter = profile.get("iterations")
    values = [r["per_iteration"] if per_iter else r["instructions"] for r in rows][::-1]
    names = [r["symbol"] for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.4))
    bars = ax.barh(names, values, color="#4c72b0")
    for bar, value in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.1f}", va="center", fontsize=8)
    ax.set_xlabel("guest instructions per iteration (exclusive)" if per_iter else "guest instructions (exclusive)")
    ax.set_title(f"{_label(profile)}: {profile['workload']['name']} × {per_iter or '?'}, "
                 f"top {len(rows)} kernel functions", fontsize=10)
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _callers(*profiles):
    """{function: set of the functions its frames sit under} from folded stacks."""
    callers = {}
    for profile in profiles:
        for stack, _ in profile.get("folded", []):
            names = stack.split(";")
            for parent, name in zip(names, names[1:]):
                callers.setdefault(name, set()).add(parent)
    return callers


def profile_changes(before, after, top=10):
    """Functions whose instructions per iteration changed most, before → after.

    Ranked by the change of their inclusive cost (with everything they
    call). A caller whose change one of its callees explains (90% or more:
    page_fault and do_page_fault, around search_exception_table) is left
    out, so the row is where the change is; a changed callee whose only
    caller is a listed row is folded into it as a helper (search_one_table).
    [{symbol, helpers, before, after, delta, before_self, after_self}], per iteration.
    """
    if not (before.get("chains", True) and after.get("chains", True)):
        raise GdbfaultError("the profile's changes rank functions with what they call: they need call chains",
                            "profile with call chains (`gdbfault profile --chains`)")

    def per_iter(profile):
        n = profile.get("iterations") or 1
        return {f["symbol"]: (f["instructions"] / n, (f.get("inclusive") or f["instructions"]) / n)
                for f in profile["functions"]}
    b, a = per_iter(before), per_iter(after)
    zero = (0.0, 0.0)
    delta = {name: a.get(name, zero)[1] - b.get(name, zero)[1] for name in set(b) | set(a)}
    changed = {name for name, d in delta.items()
               if abs(d) > 1e-9 or a.get(name, zero)[0] != b.get(name, zero)[0]}
    callers = _callers(before, after)
    callees = {}
    for name, parents in callers.items():
        for parent in parents:
            callees.setdefault(parent, set()).add(name)
    explained = {name for name in changed
                 if any(abs(delta.get(c, 0.0)) >= 0.9 * abs(delta[name]) > 0
                        and delta.get(c, 0.0) * delta[name] > 0 for c in callees.get(name, ()))}
    kept = changed - explained
    helpers = {name: next(iter(callers[name])) for name in kept
               if len(callers.get(name, ())) == 1 and next(iter(callers[name])) in kept}
    rows = []
    for name in kept - set(helpers):
        rows.append({"symbol": name, "helpers": sorted(h for h, p in helpers.items() if p == name),
                     "before": round(b.get(name, zero)[1], 3), "after": round(a.get(name, zero)[1], 3),
                     "delta": round(delta[name], 3),
                     "before_self": round(b.get(name, zero)[0], 3), "after_self": round(a.get(name, zero)[0], 3)})
    rows.sort(key=lambda r: (-abs(r["delta"]), r["symbol"]))
    return rows[:top]


def render_changes(rows, labels, fmt="table"):
    """The profile changes as a table/markdown block (for compare --profile)."""
    table = [[r["symbol"] + (f" (+ {', '.join(r['helpers'])})" if r.get("helpers") else ""),
              _f(r["before"]), _f(r["after"]), f"{r['delta']:+,.2f}",
              f"{_f(r['before_self'])} → {_f(r['after_self'])}"] for r in rows]
    text = tabulate(table, headers=["kernel function, with what it calls (instructions / iter)", labels["before"],
                                    labels["after"], "change", "own code only"],
                    tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True,
                    colalign=("left", "right", "right", "right", "right"))
    return text + "\n"
