"""`gdbfault compare`: two kernels, the same workload, side by side (and their kernel profiles with --profile)."""
import dataclasses
import os
import sys

from gdbfault.base.errors import GdbfaultError
from gdbfault.cli.options import add_run_options, check_outputs, spec_from_args
from gdbfault.model.result import as_result

__all__ = ["add_parser", "cmd_compare", "KERNEL_PROFILE"]

KERNEL_PROFILE = object()     # `compare --profile` given alone


def add_parser(sub, epilog, formatter):
    from gdbfault.analysis.compare import FORMATS as COMPARE_FORMATS
    p = sub.add_parser("compare", help="run two kernels with the same workload, side by side",
                       description="Run a kernel before and after a patch with the same workload "
                                   "and settings, and print hits, path costs and the guest's times "
                                   "side by side with deltas and ratios.",
                       epilog=epilog, formatter_class=formatter)
    p.add_argument("--before", default="vanilla", metavar="VARIANT|PATH",
                   help="kernel before the change: a lab kernel variant or a kernel image (default: vanilla)")
    p.add_argument("--after", default="patched", metavar="VARIANT|PATH",
                   help="kernel after the change (default: patched)")
    p.add_argument("--before-map", metavar="FILE", help="System.map of the --before kernel")
    p.add_argument("--after-map", metavar="FILE", help="System.map of the --after kernel")
    # The kernels come from --before/--after; --profile has a form of its own below;
    # a live patch is one kernel changing in one run (attach --live-patch).
    add_run_options(p, leave_out=("kernel", "variant", "system_map", "profile", "live_patch", "patch_at",
                                  "unpatch_at", "keep_run_dir"))
    p.add_argument("--plot", metavar="FILE.png", help="draw the per-path cost distributions")
    # Alone, --profile adds the kernel profile's biggest per-function changes;
    # with a value it is still the probe profile (NAME|FILE).
    p.add_argument("--profile", nargs="?", const=KERNEL_PROFILE, metavar="NAME|FILE",
                   help="alone: also profile both kernels (the kernel-profile plugin, in the same runs as the "
                        "counts) and list the functions whose instructions per iteration changed most; with a "
                        "value: the probe profile")
    p.add_argument("--format", default="table", choices=COMPARE_FORMATS, help="output format (default: table)")
    p.add_argument("--output", "-o", metavar="FILE", help="save the comparison (both runs) as JSON")
    p.add_argument("--sequential", action="store_true", help="run one kernel after the other")
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args):
    from gdbfault.analysis.compare import (compare_runs, for_plot, profile_changes, render_compare,
                                           render_profile_changes, spec_for_kernel)
    from gdbfault.views.report import save_json
    want_profile = args.profile is KERNEL_PROFILE
    if want_profile:
        args.profile = None
    check_outputs(args)
    base = spec_from_args(args)
    if want_profile:          # each counting run carries the profile (with call chains: ranked inclusive)
        base = dataclasses.replace(base, kernel_profile=True, call_chains=True)
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
        cmp["profile_changes"] = profile_changes(cmp["before"], cmp["after"], cmp["labels"])
        if args.format == "csv":
            cmp["rows"] += [{"metric": f"{r['symbol']} instructions / iter", "before": r["before"],
                             "after": r["after"], "delta": r["delta"],
                             "ratio": r["after"] / r["before"] if r["before"] else None, "unit": "",
                             "source": "profile"} for r in cmp["profile_changes"]["rows"]]
    if args.output:
        save_json(cmp, args.output)
    if args.plot:
        from gdbfault.views.plot import plot_paths
        plot_paths([(cmp["labels"][side], for_plot(cmp[side])) for side in ("before", "after")], args.plot)
    sys.stdout.write(render_compare(cmp, args.format))
    if want_profile:
        sys.stdout.write(render_profile_changes(cmp["profile_changes"], args.format))
    if args.format == "table":
        for what, f in (("plot", args.plot), ("comparison", args.output)):
            if f:
                print(f"{what} written to {f}")
    # Like attach: counts that disagree with the guest's own summary fail the command.
    disagree = [c for side in ("before", "after") for c in as_result(cmp[side]).failed_checks]
    return 1 if disagree else 0
