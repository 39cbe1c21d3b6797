"""The `gdbfault profile` command: options, run, output.

    gdbfault profile --qemu [--kernel lab|PATH] [--variant V] [--system-map FILE]
                     [--workload W] [--iterations N] [--top N]
                     [--format table|json|csv|markdown|folded] [--output FILE] [--plot FILE.png]

Exit codes as for attach: 0 ok, 1 kernel + user do not account for the
guest's own cycle count, 2 bad input or a target the plugin cannot be loaded
into (--port/--socket/--pid: a running QEMU), 3 the guest went wrong.
"""
import sys

from gdbfault.errors import GdbfaultError

__all__ = ["add_parser", "cmd_profile"]


def add_parser(subparsers):
    from gdbfault.kprofile_report import FORMATS
    from gdbfault.locations import VARIANTS, WORKLOADS
    p = subparsers.add_parser(
        "profile", help="where the kernel's instructions go, per function and call chain",
        description="Run the workload under QEMU with gdbfault's kernel-profile TCG plugin and count the "
                    "guest instructions each kernel function executes in the workload's measured loop "
                    "(exact, -icount shift=0), with call chains from a shadow call stack.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--qemu", action="store_true", help="start QEMU with the kernel and workload")
    target.add_argument("--port", type=int, metavar="N", help="(not possible: a running QEMU's gdbstub)")
    target.add_argument("--socket", metavar="PATH", help="(not possible: a running QEMU's gdbstub)")
    target.add_argument("--pid", type=int, metavar="PID", help="(not possible: a running QEMU)")
    p.add_argument("--kernel", default="lab", metavar="lab|PATH",
                   help="kernel to boot: the built-in lab kernel (default) or a kernel image")
    p.add_argument("--variant", default="vanilla", choices=VARIANTS, help="lab kernel build (default: vanilla)")
    p.add_argument("--system-map", metavar="FILE", help="System.map for a kernel without ELF symbols")
    p.add_argument("--workload", default="mprotect", choices=WORKLOADS, help="guest workload (default: mprotect)")
    p.add_argument("--iterations", type=int, metavar="N", help="workload iterations (default: the workload's)")
    p.add_argument("--append", default="", metavar="CMDLINE", help="extra kernel command line words")
    p.add_argument("--no-icount", dest="icount", action="store_false",
                   help="plain TCG (counts stay exact; the guest's cycles are then host time)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up on a guest that has not finished by then (default: 600)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="functions in the table (default: 20)")
    p.add_argument("--format", default="table", choices=FORMATS, help="output format (default: table)")
    p.add_argument("--output", "-o", metavar="FILE", help="save the profile as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the top functions as a bar chart")
    p.add_argument("--keep-run-dir", action="store_true", help="keep QEMU's run directory")
    p.set_defaults(func=cmd_profile)
    return p


def cmd_profile(args):
    from gdbfault.kprofile import NOT_ON_RUNNING_QEMU, ProfileSpec, run_profile
    from gdbfault.kprofile_report import plot_profile, render_profile, save_profile
    if not args.qemu:
        raise GdbfaultError(NOT_ON_RUNNING_QEMU)
    if args.top <= 0:
        raise GdbfaultError(f"--top must be positive, not {args.top}")
    spec = ProfileSpec(kernel=args.kernel, variant=args.variant, system_map=args.system_map,
                       workload=args.workload, iterations=args.iterations, append=args.append,
                       icount=args.icount, timeout_s=args.timeout, keep_run_dir=args.keep_run_dir)
    try:
        profile = run_profile(spec)
    except GdbfaultError as exc:
        if args.output and getattr(exc, "partial", None) is not None:
            save_profile(exc.partial, args.output)
            exc.args = (f"{exc} (the counts until then are saved to {args.output})",)
        raise
    if args.output:
        save_profile(profile, args.output)
    if args.plot:
        plot_profile(profile, args.plot, top=min(args.top, 25))
    sys.stdout.write(render_profile(profile, args.format, top=args.top))
    if args.format == "table":
        for what, f in (("plot", args.plot), ("profile", args.output)):
            if f:
                print(f"{what} written to {f}")
    return 0 if profile["accounting"].get("agree") in (True, None) else 1
