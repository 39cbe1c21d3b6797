"""Comparing two runs of the same workload: the rows of `gdbfault compare` and their rendering.

`compare_runs(before, after)` runs both RunSpecs (runner.run_all: in parallel
when the machine has more than one core) and returns a comparison dict
(schema "gdbfault.compare/1"); `build_comparison` makes one from two runs
already measured:

  before, after   the two runs, as RunResult JSON (model/result.py)
  rows            [{metric, before, after, delta, ratio, unit}], all measured:
                  probe hits per iteration (by symbol), the user-signal
                  path's median and p95 cost, every path shape's median,
                  the guest's cycles per iteration and real/user/sys seconds
  seed            the seed's own 1997 figures (SEED), beside the rows and
                  never among them: {metric, what, unit, before, after}
  labels          {before, after}: how the two runs are named in reports

delta = after - before; ratio = after / before (None when before is 0 or a
value is missing); each value is read by metrics.py, as `gdbfault check`
reads it. `render_compare(cmp, fmt)` prints it as a table, JSON, CSV or
markdown. The command line is in cli.py.
"""
import csv
import dataclasses
import io
import json
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.analysis.metrics import find_probe, guest_seconds, path_row, value
from gdbfault.model.result import as_result, json_default
from gdbfault.runs.parallel import run_all
from gdbfault.views.report import abi_note, emulator_text

__all__ = ["compare_runs", "build_comparison", "build_rows", "render_compare", "spec_for_kernel", "run_label",
           "for_plot", "profile_changes", "render_profile_changes", "SCHEMA", "SEED", "FORMATS"]

SCHEMA = "gdbfault.compare/1"
FORMATS = ("table", "json", "csv", "markdown")
# The seed's measurement (the June 1997 patch mail): 1,000,000 mprotect/SIGSEGV
# iterations, system time before and after the change. Reference data, not a
# measurement of ours: a comparison carries it apart from its rows.
SEED = {"metric": "sys", "what": "10^6 iterations, real hardware", "unit": "s",
        "before": 76.83, "after": 57.76}


def spec_for_kernel(base, kernel, system_map=None):
    """A copy of RunSpec `base` for KERNEL: a lab variant name or a kernel file."""
    from gdbfault.base.locations import VARIANTS
    if kernel in VARIANTS or kernel == "lab":
        return dataclasses.replace(base, kernel="lab", variant=base.variant if kernel == "lab" else kernel,
                                   system_map=None)
    if not Path(kernel).is_file():
        raise GdbfaultError(f"'{kernel}' is neither a lab kernel variant nor a kernel file",
                            f"choose one of: {', '.join(VARIANTS)}, or give the path of a kernel image")
    return dataclasses.replace(base, kernel=str(kernel), system_map=system_map)


def run_label(result):
    """How a comparison's columns name a run: the lab variant, else the kernel file's name."""
    kernel = as_result(result).kernel
    return kernel.variant if kernel.lab else Path(kernel.path).name


def _release(result):
    """A brought kernel's release ("6.1.0-57-amd64"), from its image header; None if unknown."""
    version = (as_result(result).kernel.boot or {}).get("version")
    return version.split()[0] if version else None


def compare_runs(before, after, parallel=True):
    """Run RunSpecs `before` and `after`; the comparison dict (module docstring)."""
    results = run_all({"before": before, "after": after}, parallel=parallel)
    return build_comparison(results["before"], results["after"])


def build_comparison(before, after):
    """The comparison dict for two RunResults (already measured or loaded)."""
    labels = {"before": run_label(before), "after": run_label(after)}
    if labels["before"] == labels["after"]:
        # two files of one name (Debian's vmlinuz of two flavours): their releases, if they differ
        releases = {"before": _release(before), "after": _release(after)}
        differ = None not in releases.values() and releases["before"] != releases["after"]
        labels = releases if differ else {"before": "before", "after": "after"}
    return {"schema": SCHEMA, "labels": labels, "before": before, "after": after,
            "rows": build_rows(before, after), "seed": dict(SEED)}


def _row(metric, before, after, unit=""):
    delta = ratio = None
    if before is not None and after is not None:
        delta = round(after - before, 4)
        ratio = round(after / before, 4) if before else None
    return {"metric": metric, "before": before, "after": after, "delta": delta, "ratio": ratio,
            "unit": unit}


def build_rows(before, after):
    before, after = as_result(before), as_result(after)
    rows = []
    # Hits per iteration, by role, named by symbol.
    roles = []
    for r in (before, after):
        for p in r.probes:
            if p.role not in roles:
                roles.append(p.role)
    for role in roles:
        pb, pa = find_probe(before, role), find_probe(after, role)
        syms = [p.symbol for p in (pb, pa) if p]
        name = syms[0] if len(set(syms)) == 1 else " | ".join(syms)
        rows.append(_row(f"{name} / iter", value(before, "per_iteration", (role,)),
                         value(after, "per_iteration", (role,))))
    # The user-signal path: the seed's path, whatever its shape on each side.
    if path_row(before, "user-signal") or path_row(after, "user-signal"):
        for stat in ("median", "p95"):
            rows.append(_row(f"user-signal path, {stat} insns", value(before, "path", ("user-signal", stat)),
                             value(after, "path", ("user-signal", stat)), "insns"))
    # Every path shape's median.
    shapes = []
    for r in (before, after):
        for p in r.paths or []:
            if p.shape not in shapes:
                shapes.append(p.shape)
    for shape in shapes:
        rows.append(_row(f"{shape}, median", value(before, "path", (shape, "median")),
                         value(after, "path", (shape, "median")), "insns"))
    rows.append(_row("cycles / iteration", value(before, "cycles_per_iteration"),
                     value(after, "cycles_per_iteration"), "cycles"))
    for key, label in (("real_ticks", "guest real time"), ("user_ticks", "guest user time"),
                       ("sys_ticks", "guest sys time")):
        rows.append(_row(label, guest_seconds(before, key), guest_seconds(after, key), "s"))
    return rows


# -- rendering -----------------------------------------------------------------

def _num(v, unit=""):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f} s"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.2f}"
    if "/ iter" in unit:
        return f"{v:.2f}"
    return f"{int(v)}"


def _change(row):
    d, b = row["delta"], row["before"]
    if d is None:
        return "-"
    minus = "−" if d < 0 else ("+" if d > 0 else "")
    if row["metric"].endswith("/ iter"):
        return "0" if d == 0 else f"{minus}{abs(d):.2f}"
    if d == 0:
        return "0"
    mag = f"{abs(d):.2f} s" if row["unit"] == "s" else (f"{abs(d):.2f}" if not float(d).is_integer()
                                                         else f"{int(abs(d))}")
    pct = f" ({minus}{abs(d) / b * 100:.1f}%)" if b else ""
    return f"{minus}{mag}{pct}"


def _cell(row, side):
    v = row[side]
    if row["metric"].endswith("/ iter"):
        return "-" if v is None else f"{v:.2f}"
    return _num(v, row["unit"])


def render_compare(cmp, fmt="table"):
    if fmt == "json":
        return json.dumps(cmp, indent=1, default=json_default) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=("metric", "before", "after", "delta", "ratio", "unit"),
                           lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in cmp["rows"]:             # measured rows only; the seed's figures are in the JSON
            w.writerow({**r, "metric": r["metric"].strip()})
        return out.getvalue()
    if fmt not in ("table", "markdown"):
        raise GdbfaultError(f"unknown format '{fmt}'", f"choose one of: {', '.join(FORMATS)}")
    from tabulate import tabulate
    b, a, labels = as_result(cmp["before"]), as_result(cmp["after"]), cmp["labels"]
    workload = (f"workload {b.workload.name}"
                + (f" × {(b.guest or {}).get('iterations') or b.workload.iterations}"
                   if b.workload.iterations or b.guest else ""))
    tools = (f" · gdb {b.tool.gdb}" if b.tool.gdb else "") + f" · backend: {b.mode.backend}"
    notes = {side: abi_note(r.workload) for side, r in (("before", b), ("after", a))}
    if emulator_text(b) == emulator_text(a) and notes["before"] == notes["after"]:
        lines = [f"before: {b.label()} · after: {a.label()}",
                 workload + (f", {notes['before']}" if notes["before"] else "")
                 + f" · {emulator_text(b)}" + tools,
                 ""]
    else:                  # e.g. an i386 kernel against an x86_64 one: each side's machine
        lines = [f"{side} ({labels[side]}): {r.label()} · {emulator_text(r)}"
                 + (f" · {notes[side]}" if notes[side] else "") for side, r in (("before", b), ("after", a))]
        lines += [workload + tools, ""]
    measured = cmp["rows"]
    table = [[r["metric"], _cell(r, "before"), _cell(r, "after"), _change(r),
              "-" if r["ratio"] is None else f"{r['ratio']:.3f}"] for r in measured]
    lines.append(tabulate(table, headers=["", labels["before"], labels["after"], "change", "ratio"],
                          tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True,
                          colalign=("left", "right", "right", "right", "right")))
    lines.append("")
    seed = cmp.get("seed")
    cyc = next((r for r in measured if r["metric"] == "cycles / iteration"), None)
    if seed:
        ours = (f"here: cycles/iteration {_num(cyc['before'])} → {_num(cyc['after'])}, {_change(cyc).split('(')[-1].rstrip(')')}"
                if cyc and cyc["delta"] is not None and cyc["before"] else "here: no cycles/iteration")
        change = (seed["after"] / seed["before"] - 1) * 100
        lines.append(f"{ours} · seed, 1997 ({seed['what']}): {seed['metric']} {seed['before']:.2f} s → "
                     f"{seed['after']:.2f} s, {'−' if change < 0 else '+'}{abs(change):.1f}%")
    lines.append("(costs in guest instructions under -icount shift=0: one instruction is one cycle; "
                 "guest times come from its 100 Hz tick and need many iterations to be non-zero)")
    bad = [f"{labels[side]}: {c.role} counted {c.counted}, guest implies {c.expected}"
           for side, run in (("before", b), ("after", a)) for c in run.failed_checks]
    if bad:
        lines.append("✗ counts disagree with the guest's own summary: " + "; ".join(bad))
    return "\n".join(lines) + "\n"


# -- with --plot and with --profile ----------------------------------------------------

def for_plot(result):
    """The run's JSON dict with one shape name for its user-signal path, so both runs overlay in one panel."""
    run = as_result(result)
    row = path_row(run, "user-signal")
    data = run.to_dict()
    if row is not None:
        data["paths"] = [dict(p, shape="user-signal path (user bad area → … → SIGSEGV, either shape)")
                         if p["shape"] == row.shape else p for p in data["paths"]]
    return data


def profile_changes(before, after, labels, top=10):
    """The biggest per-function changes between the kernel profiles two runs carried
    (RunSpec.kernel_profile with call_chains: each kernel's profile came from its counting run)."""
    from gdbfault.kprofile.report import profile_changes as biggest_changes
    b, a = as_result(before).kernel_profile, as_result(after).kernel_profile
    if b is None or a is None:
        raise GdbfaultError("a run of the comparison carried no kernel profile",
                            "run both with kernel_profile (compare --profile)")
    return {"labels": labels, "rows": biggest_changes(b, a, top),
            "totals": {side: {**p["total"], "iterations": p["iterations"]} for side, p in (("before", b),
                                                                                            ("after", a))}}


def render_profile_changes(changes, fmt):
    from gdbfault.kprofile.report import render_changes
    if fmt in ("table", "markdown"):
        return ("\nkernel profile (gdbfault profile): the functions whose instructions per iteration changed "
                "most\n" + render_changes(changes["rows"], changes["labels"], fmt))
    return ""
