"""`gdbfault attach`: count fault-path hits on a kernel, on a QEMU gdbfault starts (--qemu) or one already running."""
import dataclasses
import sys
from pathlib import Path

from gdbfault.base.errors import GdbfaultError, RunFailed
from gdbfault.cli.options import add_run_options, check_outputs, progress_bar, refuse, spec_from_args
from gdbfault.model.result import as_result
from gdbfault.model.spec import OPTION
from gdbfault.views.report import FORMATS, kernel_label, render, save_run

__all__ = ["add_parser", "cmd_attach"]

# The run options a count on a running QEMU uses; the rest describe a run gdbfault boots.
ATTACHED_OPTIONS = ("kernel", "variant", "system_map", "profile", "probes", "live_patch")
# Why an option does not go with --port/--socket/--pid, where that is not "it describes the boot".
_NOT_ATTACHED = {
    "patch_at": "goes with --qemu; attached to a running QEMU the patch goes in at once and comes out on "
                "detaching",
    "unpatch_at": "goes with --qemu; attached to a running QEMU the patch goes in at once and comes out on "
                  "detaching",
    "backend": "goes with --qemu (a TCG plugin is loaded when QEMU starts); a running QEMU is counted with GDB",
    "timeout": "goes with --qemu; attached to a running QEMU, --duration (or Ctrl-C) ends the count",
    "plot": "goes with --qemu (a running QEMU's count has no fault paths to draw)",
    "verify_with": "goes with --qemu --backend plugin",
}


def add_parser(sub, epilog, formatter):
    at = sub.add_parser("attach", help="count fault-path hits on a kernel under QEMU",
                        description="Start QEMU with a kernel (--qemu) and count hits on its fault path "
                                    "while a workload runs, or count on a QEMU that is already running.",
                        epilog=epilog, formatter_class=formatter)
    target = at.add_mutually_exclusive_group(required=True)
    target.add_argument("--qemu", action="store_true", help="start QEMU with the kernel and workload")
    target.add_argument("--port", type=int, metavar="N", help="attach to a running QEMU's gdbstub on 127.0.0.1:N")
    target.add_argument("--socket", metavar="PATH", help="attach to a running QEMU's gdbstub unix socket")
    target.add_argument("--pid", type=int, metavar="PID", help="attach to a running QEMU, finding its gdbstub")
    at.add_argument("--duration", type=float, metavar="SECONDS",
                    help="with --port/--socket/--pid: count this long (default: until Ctrl-C)")
    add_run_options(at)
    at.add_argument("--plot", metavar="FILE.png", help="draw the per-path cost distributions")
    at.add_argument("--verify-with", choices=("gdb",), metavar="gdb",
                    help="with --backend plugin: run the GDB backend too and check both agree")
    at.add_argument("--keep-patch", action="store_true",
                    help="with --live-patch on --port/--socket/--pid: leave the kernel patched when detaching "
                         "(by default the old entries are put back)")
    at.add_argument("--qmp", metavar="PATH",
                    help="with --port/--socket/--pid: the QEMU's QMP unix socket (default: found on its command "
                         "line), used to leave its guest running as found whatever happens")
    at.add_argument("--format", default="table", choices=FORMATS, help="report format (default: table)")
    at.add_argument("--output", "-o", metavar="FILE", help="save the run as JSON (also when it fails)")
    at.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    at.set_defaults(func=cmd_attach)
    return at


def cmd_attach(args):
    check_outputs(args)
    bar = None
    try:
        if args.qemu:
            spec = _booted_spec(args)
            bar, update = progress_bar(args)
            result = _run_booted(spec, args, update)
        else:
            result = _run_attached(args)
    except RunFailed as failed:
        if args.output:
            save_run(failed.result, args.output)
            # (attached, the error itself says up to when the counts go)
            what = "saved" if as_result(failed.result).run.has("counts_at_s") else "counts so far saved"
            failed.args = (f"{failed} ({what} to {args.output})",)
        kept = as_result(failed.result).run.kept if failed.result is not None else None
        if kept:
            failed.args = (f"{failed} (run folders kept: {' '.join(kept)})",)
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.output:
        save_run(result, args.output)
    run = as_result(result)
    if args.plot and run.live_patch is not None and run.live_patch.timeline:
        from gdbfault.views.plot import plot_live_patch
        plot_live_patch(result, args.plot)
    elif args.plot:
        from gdbfault.views.plot import plot_paths
        plot_paths([(kernel_label(result), result)], args.plot)
    sys.stdout.write(render(result, args.format))
    if args.plot and args.format == "table":
        print(f"plot written to {args.plot}")
    if args.output and args.format == "table":
        print(f"saved to {args.output}")
    if run.run.has("kept"):
        print(f"run folders kept (--keep-run-dir): {' '.join(run.run.kept)}", file=sys.stderr)
    disagree = run.verify is not None and not run.verify.agree
    return 1 if run.failed_checks or disagree else 0


def _booted_spec(args):
    """The RunSpec of `attach --qemu`, its options checked before anything boots."""
    refuse(args, ["duration", "keep_patch", "qmp"], "goes with --port/--socket/--pid (gdbfault's own QEMU ends "
                                             "with the workload)")
    if args.verify_with and args.backend != "plugin":
        raise GdbfaultError("--verify-with gdb goes with --backend plugin")
    spec = spec_from_args(args)
    if spec.backend == "plugin":          # not built: said before anything is set up or started
        from gdbfault.machine.plugins import plugin_library
        plugin_library("faultcount")
    if spec.live_patch is not None and args.plot:
        spec = dataclasses.replace(spec, timeline=True)      # --plot of a live patch draws each path's cost
    if args.output and spec.recording:
        # the recording beside the run file, for `gdbfault inspect FILE` (and for the next run of this guest)
        spec = dataclasses.replace(spec, keep_recording=f"{args.output}.rr")
    return spec


def _run_booted(spec, args, progress):
    from gdbfault.runs.booted import run_qemu
    result = run_qemu(spec, progress=progress)
    if args.verify_with:
        from gdbfault.analysis.crosscheck import cross_check
        result.verify = cross_check(result, run_qemu(dataclasses.replace(spec, backend="gdb")))
    return result


def _run_attached(args):
    """attach --port/--socket/--pid: the options it uses, the rest refused before connecting."""
    for key, why in _NOT_ATTACHED.items():
        refuse(args, [key], why)
    refuse(args, [k for k in OPTION if k not in ATTACHED_OPTIONS],
           "goes with --qemu: attached to a running QEMU, gdbfault counts what its guest runs")
    if args.duration is not None and not args.duration > 0:
        raise GdbfaultError(f"--duration must be positive, not {args.duration:g}")
    from gdbfault.backends.running_qemu import gdbstub_of_pid
    from gdbfault.runs.attached import attach_running
    address = (gdbstub_of_pid(args.pid) if args.pid is not None else args.socket if args.socket
               else f"127.0.0.1:{args.port}")
    spec = spec_from_args(args, live_patch=None)
    if not args.quiet and args.duration is None:
        print(f"counting on {address}; Ctrl-C to stop and report", file=sys.stderr)
    if args.qmp is not None and not Path(args.qmp).exists():
        raise GdbfaultError(f"--qmp {args.qmp}: no such socket")
    return attach_running(spec, address, pid=args.pid, duration=args.duration, live_patch=args.live_patch,
                          keep_patch=args.keep_patch, qmp=args.qmp)
