"""`gdbfault profile`: where the kernel's instructions go, per function (and per call chain with --chains).

Exit codes as for attach: 0 ok, 1 kernel + user do not account for the
guest's own cycle count, 2 bad input or a target the plugin cannot be loaded
into (--port/--socket/--pid: a running QEMU), 3 the guest went wrong.
"""
import dataclasses
import sys

from gdbfault.base.errors import GdbfaultError
from gdbfault.cli.options import add_run_options, check_outputs, spec_from_args

__all__ = ["add_parser", "cmd_profile", "PROFILE_OPTIONS"]

# The run options a profile run uses: what boots and runs; it arms no probes.
PROFILE_OPTIONS = ("kernel", "variant", "system_map", "workload", "workload_abi", "iterations", "append",
                   "qemu_binary", "memory", "icount", "timeout", "keep_run_dir")


def add_parser(sub, epilog, formatter):
    from gdbfault.kprofile.report import FORMATS as PROFILE_FORMATS
    p = sub.add_parser(
        "profile", help="where the kernel's instructions go, per function and call chain",
        description="Run the workload under QEMU with gdbfault's kernel-profile TCG plugin and count the "
                    "guest instructions each kernel function executes in the workload's measured loop "
                    "(exact, -icount shift=0); with --chains also call chains from a shadow call stack.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--qemu", action="store_true", help="start QEMU with the kernel and workload")
    target.add_argument("--port", type=int, metavar="N", help="(not possible: a running QEMU's gdbstub)")
    target.add_argument("--socket", metavar="PATH", help="(not possible: a running QEMU's gdbstub)")
    target.add_argument("--pid", type=int, metavar="PID", help="(not possible: a running QEMU)")
    add_run_options(p, keys=PROFILE_OPTIONS)
    p.add_argument("--top", type=int, default=20, metavar="N", help="functions in the table (default: 20)")
    p.add_argument("--format", default="table", choices=PROFILE_FORMATS, help="output format (default: table)")
    p.add_argument("--chains", action="store_true",
                   help="also call chains: inclusive costs and folded stacks (~1.3x an uninstrumented run "
                        "instead of ~1.05x); --format folded implies it")
    p.add_argument("--output", "-o", metavar="FILE", help="save the profile as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the top functions as a bar chart")
    p.set_defaults(func=cmd_profile)
    return p


def cmd_profile(args):
    from gdbfault.kprofile.report import plot_kernel_profile, render_profile, save_kernel_profile
    from gdbfault.kprofile.run import NOT_ON_RUNNING_QEMU, run_profile
    if not args.qemu:
        raise GdbfaultError(NOT_ON_RUNNING_QEMU)
    if args.top <= 0:
        raise GdbfaultError(f"--top must be positive, not {args.top}")
    check_outputs(args)
    spec = dataclasses.replace(spec_from_args(args), call_chains=args.chains or args.format == "folded")
    try:
        profile = run_profile(spec)
    except GdbfaultError as exc:
        partial = getattr(exc, "partial", None)
        if args.output and partial is not None:
            save_kernel_profile(partial, args.output)
            exc.args = (f"{exc} (the counts until then are saved to {args.output})",)
        if partial is not None and partial["run"].get("kept"):
            exc.args = (f"{exc} (run folders kept: {' '.join(partial['run']['kept'])})",)
        raise
    if args.output:
        save_kernel_profile(profile, args.output)
    if args.plot:
        plot_kernel_profile(profile, args.plot, top=min(args.top, 25))
    sys.stdout.write(render_profile(profile, args.format, top=args.top))
    if profile["run"].get("kept"):
        print(f"run folders kept (--keep-run-dir): {' '.join(profile['run']['kept'])}", file=sys.stderr)
    if args.format == "table":
        for what, f in (("plot", args.plot), ("profile", args.output)):
            if f:
                print(f"{what} written to {f}")
    return 0 if profile["accounting"].get("agree") in (True, None) else 1
