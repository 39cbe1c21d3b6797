"""`gdbfault compare`: run two kernels with the same workload, side by side.

`compare_runs(before, after)` runs both RunSpecs (in parallel when the
machine has more than one core: each run_qemu call has its own QEMU, GDB and
run directory) and returns a comparison dict (schema "gdbfault.compare/1"):

  before, after   the two RunResult dicts (schema in report.py)
  rows            [{metric, before, after, delta, ratio, unit}], all measured:
                  probe hits per iteration (by symbol), the user-signal
                  path's median and p95 cost, every path shape's median,
                  the guest's cycles per iteration and real/user/sys seconds
  seed            the seed's own 1997 figures (SEED), beside the rows and
                  never among them: {metric, what, unit, before, after}
  labels          {before, after}: how the two runs are named in reports

delta = after - before; ratio = after / before (None when before is 0 or a
value is missing). `render_compare(cmp, fmt)` prints it as a table, JSON,
CSV or markdown.
"""
import argparse
import csv
import dataclasses
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from gdbfault.errors import GdbfaultError
from gdbfault.paths import USER_SIGNAL_SHAPES
from gdbfault.profiles import SIGNAL

__all__ = ["compare_runs", "build_rows", "render_compare", "add_parser", "user_signal_path",
           "spec_for_kernel", "SCHEMA", "SEED", "FORMATS"]

SCHEMA = "gdbfault.compare/1"
FORMATS = ("table", "json", "csv", "markdown")
# The seed's measurement (the June 1997 patch mail): 1,000,000 mprotect/SIGSEGV
# iterations, system time before and after the change. Reference data, not a
# measurement of ours: a comparison carries it apart from its rows.
SEED = {"metric": "sys", "what": "10^6 iterations, real hardware", "unit": "s",
        "before": 76.83, "after": 57.76}


def spec_for_kernel(base, kernel, system_map=None):
    """A copy of RunSpec `base` for KERNEL: a lab variant name or a kernel file."""
    from gdbfault.locations import VARIANTS
    if kernel in VARIANTS or kernel == "lab":
        return dataclasses.replace(base, kernel="lab", variant=base.variant if kernel == "lab" else kernel,
                                   system_map=None)
    if not Path(kernel).is_file():
        raise GdbfaultError(f"'{kernel}' is neither a lab kernel variant nor a kernel file",
                            f"choose one of: {', '.join(VARIANTS)}, or give the path of a kernel image")
    return dataclasses.replace(base, kernel=str(kernel), system_map=system_map)


def _run(spec):
    from gdbfault.run import run_qemu
    return run_qemu(spec)


def run_all(specs, parallel=True):
    """{name: RunResult} for {name: RunSpec}; parallel when >1 core.

    A failed run raises its error once every run has ended (no QEMU is left
    behind), with `.partial` = what every run measured, for --output. A stop
    signal (Ctrl-C, SIGTERM, SIGHUP) stops all runs at once; then the error
    is the stop, with exit code 128 + its number.
    """
    from gdbfault.lifecycle import Stopped, request_stop
    names = list(specs)
    workers = min(len(names), os.cpu_count() or 1) if parallel else 1
    outcomes, stopped = {}, None
    if workers <= 1:
        for name in names:
            try:
                outcomes[name] = ("ok", _run(specs[name]))
            except BaseException as exc:        # noqa: B036 — kept to report it after teardown
                outcomes[name] = ("error", exc)
                break                           # a failed or stopped run ends the set
    else:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = {name: pool.submit(_run, specs[name]) for name in names}
            while True:
                try:
                    if all(f.done() for f in futures.values()):
                        break
                    wait(list(futures.values()), timeout=0.5)
                except KeyboardInterrupt as exc:   # the runs poll the stop flag and end
                    stopped = stopped or (exc if isinstance(exc, Stopped) else Stopped())
                    request_stop(stopped.signum)
            for name, future in futures.items():
                exc = future.exception()
                outcomes[name] = ("ok", future.result()) if exc is None else ("error", exc)
        finally:
            pool.shutdown(wait=True)
    results = {name: (value if kind == "ok" else getattr(value, "result", None))
               for name, (kind, value) in outcomes.items()}
    results = {name: r for name, r in results.items() if r is not None}
    errors = [(name, value) for name, (kind, value) in outcomes.items() if kind == "error"]
    if stopped is not None:
        err = GdbfaultError(str(stopped))
        err.exit_code = stopped.exit_code
        err.partial = results
        raise err
    if errors:
        name, exc = errors[0]
        if isinstance(exc, GdbfaultError):
            exc.args = (f"run '{name}': {exc}",)
        exc.partial = results              # what every run measured, for --output
        raise exc
    return results


def run_label(result):
    k = result["kernel"]
    return k.get("variant") if k.get("lab") else Path(k["path"]).name


def compare_runs(before, after, parallel=True):
    """Run RunSpecs `before` and `after`; the comparison dict (module docstring)."""
    results = run_all({"before": before, "after": after}, parallel=parallel)
    return build_comparison(results["before"], results["after"])


def build_comparison(before, after):
    """The comparison dict for two RunResults (already measured or loaded)."""
    labels = {"before": run_label(before), "after": run_label(after)}
    if labels["before"] == labels["after"]:
        labels = {"before": "before", "after": "after"}
    return {"schema": SCHEMA, "labels": labels, "before": before, "after": after,
            "rows": build_rows(before, after), "seed": dict(SEED)}


def user_signal_path(result):
    """The path row of a run's user faults that got SIGSEGV (None when untraced).

    A known user-signal shape when the run has one; else the most frequent
    path with a signal event (a kernel we do not know, or a broken build).
    """
    paths = result.get("paths") or []
    for p in paths:
        if p["shape"] in USER_SIGNAL_SHAPES:
            return p
    signalled = [p for p in paths if SIGNAL in p.get("events", []) and not p["shape"].startswith(("never", "cut off"))]
    return max(signalled, key=lambda p: p["count"]) if signalled else None


def _row(metric, before, after, unit=""):
    delta = ratio = None
    if before is not None and after is not None:
        delta = round(after - before, 4)
        ratio = round(after / before, 4) if before else None
    return {"metric": metric, "before": before, "after": after, "delta": delta, "ratio": ratio,
            "unit": unit}


def _seconds(guest, key):
    if not guest or guest.get(key) is None or not guest.get("ticks_per_s"):
        return None
    return round(guest[key] / guest["ticks_per_s"], 2)


def build_rows(before, after):
    rows = []
    # Hits per iteration, by role, named by symbol.
    roles = []
    for r in (before, after):
        for p in r.get("probes", []):
            if p["role"] not in roles:
                roles.append(p["role"])
    for role in roles:
        pb = next((p for p in before.get("probes", []) if p["role"] == role), None)
        pa = next((p for p in after.get("probes", []) if p["role"] == role), None)
        syms = [p["symbol"] for p in (pb, pa) if p]
        name = syms[0] if len(set(syms)) == 1 else " | ".join(syms)
        rows.append(_row(f"{name} / iter", pb and pb.get("per_iteration"), pa and pa.get("per_iteration")))
    # The user-signal path: the seed's path, whatever its shape on each side.
    ub, ua = user_signal_path(before), user_signal_path(after)
    if ub or ua:
        for stat in ("median", "p95"):
            rows.append(_row(f"user-signal path, {stat} insns", ub and ub.get(stat), ua and ua.get(stat),
                             "insns"))
    # Every path shape's median.
    shapes = []
    for r in (before, after):
        for p in r.get("paths") or []:
            if p["shape"] not in shapes:
                shapes.append(p["shape"])
    for shape in shapes:
        pb = next((p for p in before.get("paths") or [] if p["shape"] == shape), None)
        pa = next((p for p in after.get("paths") or [] if p["shape"] == shape), None)
        rows.append(_row(f"{shape}, median", pb and pb.get("median"), pa and pa.get("median"), "insns"))
    gb, ga = before.get("guest") or {}, after.get("guest") or {}
    rows.append(_row("cycles / iteration", gb.get("cycles_per_iteration"), ga.get("cycles_per_iteration"),
                     "cycles"))
    for key, label in (("real_ticks", "guest real time"), ("user_ticks", "guest user time"),
                       ("sys_ticks", "guest sys time")):
        rows.append(_row(label, _seconds(gb, key), _seconds(ga, key), "s"))
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
        return json.dumps(cmp, indent=1) + "\n"
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
    from gdbfault.report import kernel_label
    b, a, labels = cmp["before"], cmp["after"], cmp["labels"]
    lines = [f"before: {kernel_label(b)} · after: {kernel_label(a)}",
             f"workload {b['workload']['name']}"
             + (f" × {(b.get('guest') or {}).get('iterations') or b['workload']['iterations']}"
                if b['workload'].get('iterations') or b.get('guest') else "")
             + f" · qemu-system-i386 {b['tool']['qemu']} TCG"
             + (", -icount shift=0" if b["mode"].get("icount") else "")
             + (f" · gdb {b['tool']['gdb']}" if b["tool"].get("gdb") else "")
             + f" · backend: {b['mode'].get('backend', 'gdb')}", ""]
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
    bad = [f"{labels[side]}: {c['role']} counted {c['counted']}, guest implies {c['expected']}"
           for side in ("before", "after") for c in cmp[side].get("checks", []) if not c["ok"]]
    if bad:
        lines.append("✗ counts disagree with the guest's own summary: " + "; ".join(bad))
    return "\n".join(lines) + "\n"


# -- command line ----------------------------------------------------------------

def _exit_codes():
    from gdbfault.cli import EXIT_CODES
    return EXIT_CODES


def add_parser(subparsers):
    from gdbfault.cli import _add_run_options
    p = subparsers.add_parser("compare", help="run two kernels with the same workload, side by side",
                              description="Run a kernel before and after a patch with the same workload "
                                          "and settings, and print hits, path costs and the guest's times "
                                          "side by side with deltas and ratios.",
                              epilog=_exit_codes(), formatter_class=argparse.RawDescriptionHelpFormatter,
                              conflict_handler="resolve")     # --profile below takes over the run option
    p.add_argument("--before", default="vanilla", metavar="VARIANT|PATH",
                   help="kernel before the change: a lab kernel variant or a kernel image (default: vanilla)")
    p.add_argument("--after", default="patched", metavar="VARIANT|PATH",
                   help="kernel after the change (default: patched)")
    p.add_argument("--before-map", metavar="FILE", help="System.map of the --before kernel")
    p.add_argument("--after-map", metavar="FILE", help="System.map of the --after kernel")
    _add_run_options(p)
    # Alone, --profile adds the kernel profile's biggest per-function changes
    # (issue 13); with a value it is still the probe profile (NAME|FILE).
    p.add_argument("--profile", nargs="?", const=KERNEL_PROFILE, metavar="NAME|FILE",
                   help="alone: also profile both kernels (gdbfault profile) and list the functions whose "
                        "instructions per iteration changed most; with a value: the probe profile")
    p.add_argument("--format", default="table", choices=FORMATS, help="output format (default: table)")
    p.add_argument("--output", "-o", metavar="FILE", help="save the comparison (both runs) as JSON")
    p.add_argument("--sequential", action="store_true", help="run one kernel after the other")
    p.set_defaults(func=cmd_compare)
    return p


def _for_plot(result):
    """A shallow copy whose user-signal path has one shape name, so both runs overlay in one panel."""
    row = user_signal_path(result)
    if row is None:
        return result
    paths = [dict(p, shape="user-signal path (user bad area → … → SIGSEGV, either shape)") if p is row else p
             for p in result.get("paths") or []]
    return {**result, "paths": paths}


KERNEL_PROFILE = object()     # `compare --profile` given alone


def _profile_changes(before, after, labels, top=10):
    """Profile both kernels with the kprofile plugin; their biggest per-function changes."""
    from gdbfault.kprofile import ProfileSpec, run_profile
    from gdbfault.kprofile_report import profile_changes

    def profile(spec):
        return run_profile(ProfileSpec(kernel=spec.kernel, variant=spec.variant, system_map=spec.system_map,
                                       workload=spec.workload, iterations=spec.iterations, append=spec.append,
                                       icount=spec.icount, timeout_s=spec.timeout_s))
    b, a = profile(before), profile(after)
    return {"labels": labels, "rows": profile_changes(b, a, top),
            "totals": {side: {**p["total"], "iterations": p["iterations"]} for side, p in (("before", b),
                                                                                            ("after", a))}}


def _render_profile_changes(changes, fmt):
    from gdbfault.kprofile_report import render_changes
    if fmt in ("table", "markdown"):
        return ("\nkernel profile (gdbfault profile): the functions whose instructions per iteration changed "
                "most\n" + render_changes(changes["rows"], changes["labels"], fmt))
    return ""


def cmd_compare(args):
    from gdbfault.cli import _spec_from_args, check_outputs
    from gdbfault.report import save_json
    want_profile = args.profile is KERNEL_PROFILE
    if want_profile:
        args.profile = None
    if args.kernel != "lab" or args.variant != "vanilla" or args.system_map:
        raise GdbfaultError("compare takes its kernels from --before and --after",
                            "drop --kernel/--variant/--system-map")
    check_outputs(args)
    base = _spec_from_args(args)
    before = spec_for_kernel(base, args.before, args.before_map)
    after = spec_for_kernel(base, args.after, args.after_map)
    if sys.stderr.isatty():
        how = "one after the other" if args.sequential or (os.cpu_count() or 1) < 2 else "in parallel"
        print(f"running {args.before} and {args.after} {how} …", file=sys.stderr)
    try:
        cmp = compare_runs(before, after, parallel=not args.sequential)
    except GdbfaultError as exc:
        if args.output:
            save_json({"schema": "gdbfault.compare/1", "complete": False, "error": str(exc),
                       **getattr(exc, "partial", {})}, args.output)
            exc.args = (f"{exc} (what was measured is saved to {args.output})",)
        raise
    if want_profile:
        cmp["profile_changes"] = _profile_changes(before, after, cmp["labels"])
        if args.format == "csv":
            cmp["rows"] += [{"metric": f"{r['symbol']} instructions / iter", "before": r["before"],
                             "after": r["after"], "delta": r["delta"],
                             "ratio": r["after"] / r["before"] if r["before"] else None, "unit": "",
                             "source": "profile"} for r in cmp["profile_changes"]["rows"]]
    if args.output:
        save_json(cmp, args.output)
    if args.plot:
        from gdbfault.plot import plot_paths
        plot_paths([(cmp["labels"][side], _for_plot(cmp[side])) for side in ("before", "after")], args.plot)
    sys.stdout.write(render_compare(cmp, args.format))
    if want_profile:
        sys.stdout.write(_render_profile_changes(cmp["profile_changes"], args.format))
    if args.format == "table":
        for what, f in (("plot", args.plot), ("comparison", args.output)):
            if f:
                print(f"{what} written to {f}")
    # Like attach: counts that disagree with the guest's own summary fail the command.
    disagree = [c for side in ("before", "after") for c in cmp[side].get("checks", []) if not c["ok"]]
    return 1 if disagree else 0
