"""The `gdbfault` command line: attach, report (and compare, check).

Every failure ends in one line on stderr, `gdbfault: error: ...`, and a
non-zero exit code (EXIT_CODES); with --output, whatever was measured is
saved first. SIGINT, SIGTERM and SIGHUP end a run the same way (lifecycle.py).
"""
import argparse
import sys
import time

from gdbfault import __version__
from gdbfault.errors import GdbfaultError
from gdbfault.lifecycle import (Stopped, install_handlers, pending_signal, reset, restore_handlers,
                                signal_label, stop_signal)
from gdbfault.locations import VARIANTS, WORKLOADS
from gdbfault.profiles import parse_probe_option
from gdbfault.report import FORMATS, kernel_label, load_run, render, save_run

__all__ = ["main", "build_parser", "EXIT_CODES"]

EXIT_CODES = """exit codes:
  0    all good
  1    counts disagree with the guest's own summary (or a check failed)
  2    bad input, or a run that could not be carried out
  3    the guest went wrong (oops, panic, hang, QEMU killed)
  130  stopped by Ctrl-C (SIGINT)
  143  stopped by SIGTERM (a CI cancel, `timeout`)
  129  stopped by SIGHUP (the terminal closed)
with --output, what was measured is saved in every case."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to read more."""

    def error(self, message):
        print(f"gdbfault: error: {message} — see {self.prog} --help", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:         # name the subcommand whose --help lists the real options
            command = getattr(parsed, "command", None)
            sub = self._subcommands.get(command, self) if hasattr(self, "_subcommands") else self
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _add_run_options(p):
    """Options shared by every command that boots a kernel."""
    p.add_argument("--kernel", default="lab", metavar="lab|PATH",
                   help="kernel to boot: the built-in lab kernel (default) or a kernel image")
    p.add_argument("--variant", default="vanilla", choices=VARIANTS,
                   help="lab kernel build (default: vanilla, the 1997 order)")
    p.add_argument("--system-map", metavar="FILE", help="System.map for a kernel without ELF symbols")
    p.add_argument("--workload", default="mprotect", metavar="NAME|FILE",
                   help=f"guest workload: {', '.join(WORKLOADS)} (default: mprotect), or your own "
                        "static i386 ELF file, run as init")
    p.add_argument("--iterations", type=int, metavar="N", help="workload iterations (default: the workload's)")
    p.add_argument("--append", default="", metavar="CMDLINE", help="extra kernel command line words")
    p.add_argument("--profile", metavar="NAME|FILE", help="probe profile (default: picked from the symbols)")
    p.add_argument("--probe", action="append", default=[], metavar="ROLE=SYMBOL",
                   help="add or override a probe (repeatable)")
    p.add_argument("--no-icount", dest="icount", action="store_false",
                   help="plain TCG without -icount shift=0 (no deterministic instruction count)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up on a guest that has not finished by then (default: 600)")
    p.add_argument("--backend", default="gdb", choices=("gdb", "plugin"),
                   help="gdb: counting breakpoints (default); plugin: QEMU TCG plugin, the guest never stops")
    p.add_argument("--verify-with", choices=("gdb",), metavar="gdb",
                   help="with --backend plugin: run the GDB backend too and check both agree")
    p.add_argument("--live", dest="replay", action="store_false",
                   help="count in the live guest instead of a replay of its recording "
                        "(breakpoint stops then shift timer interrupts: guest timings change)")
    p.add_argument("--no-trace", dest="trace", action="store_false",
                   help="count only; do not follow fault paths (one breakpoint stop less per fault)")
    p.add_argument("--cost-sample", type=int, default=1, metavar="N",
                   help="cost every Nth fault only (hit counts stay exact; default: every fault)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the per-path cost distributions")


def build_parser():
    ap = _Parser(prog="gdbfault",
                 description="Live, exact instrumentation of a kernel's page-fault path under QEMU + GDB.",
                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"gdbfault {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    at = sub.add_parser("attach", help="count fault-path hits on a kernel under QEMU",
                        description="Start QEMU with a kernel (--qemu) and count hits on its fault path "
                                    "while a workload runs.",
                        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = at.add_mutually_exclusive_group(required=True)
    target.add_argument("--qemu", action="store_true", help="start QEMU with the kernel and workload")
    target.add_argument("--port", type=int, metavar="N", help="attach to a running QEMU's gdbstub on 127.0.0.1:N")
    target.add_argument("--socket", metavar="PATH", help="attach to a running QEMU's gdbstub unix socket")
    target.add_argument("--pid", type=int, metavar="PID", help="attach to a running QEMU, finding its gdbstub")
    at.add_argument("--duration", type=float, metavar="SECONDS",
                    help="with --port/--socket/--pid: count this long (default: until Ctrl-C)")
    _add_run_options(at)
    at.add_argument("--live-patch", metavar="FILE",
                    help="apply FILE (a patch for the lab kernel, or an i386 .o of replacement functions) "
                         "to the running kernel mid-run; the report splits before/after")
    at.add_argument("--patch-at", type=int, metavar="N",
                    help="with --live-patch: apply it after N iterations (0 = before the first; "
                         "default: half of --iterations)")
    at.add_argument("--unpatch-at", type=int, metavar="N",
                    help="with --live-patch: put the old function entries back after N iterations")
    at.add_argument("--keep-patch", action="store_true",
                    help="with --live-patch on --port/--socket/--pid: leave the kernel patched when detaching "
                         "(by default the old entries are put back)")
    at.add_argument("--format", default="table", choices=FORMATS, help="report format (default: table)")
    at.add_argument("--output", "-o", metavar="FILE", help="save the run as JSON (also when it fails)")
    at.add_argument("--keep-run-dir", action="store_true", help="keep QEMU's run directory (serial log)")
    at.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    at.set_defaults(func=cmd_attach)

    rp = sub.add_parser("report", help="re-render a saved run", description="Re-render a run saved with --output.")
    rp.add_argument("run", metavar="RUN.json")
    rp.add_argument("--format", default="table", choices=FORMATS)
    rp.set_defaults(func=cmd_report)

    from gdbfault import checks, compare
    compare.add_parser(sub)
    checks.add_parser(sub)
    from gdbfault import profile_cli      # `gdbfault profile`: the kernel profile
    profile_cli.add_parser(sub)
    ap._subcommands = sub.choices
    return ap


def check_outputs(args):
    """Everything cheap about where results go, before any kernel boots."""
    from gdbfault.report import check_writable
    if getattr(args, "output", None):
        check_writable(args.output, "--output")
    if getattr(args, "plot", None):
        from gdbfault.plot import require_matplotlib
        check_writable(args.plot, "--plot")
        require_matplotlib()


def _spec_from_args(args):
    from gdbfault.run import RunSpec, validate_spec
    live_patch = None
    if getattr(args, "live_patch", None):
        from gdbfault.livepatch_run import LivePatchSpec
        live_patch = LivePatchSpec(args.live_patch, args.patch_at, args.unpatch_at)
    elif getattr(args, "patch_at", None) is not None or getattr(args, "unpatch_at", None) is not None:
        raise GdbfaultError("--patch-at and --unpatch-at go with --live-patch")
    if getattr(args, "keep_patch", False):
        raise GdbfaultError("--keep-patch goes with --port/--socket/--pid (gdbfault's own QEMU ends with the run)")
    spec = RunSpec(kernel=args.kernel, variant=args.variant, system_map=args.system_map,
                   workload=args.workload, iterations=args.iterations, append=args.append,
                   profile=args.profile, extra_probes=[parse_probe_option(p) for p in args.probe],
                   icount=args.icount, timeout_s=args.timeout, trace=args.trace, replay=args.replay,
                   backend=args.backend,
                   cost_sample=args.cost_sample, live_patch=live_patch,
                   timeline=bool(live_patch and getattr(args, "plot", None)),
                   keep_run_dir=getattr(args, "keep_run_dir", False))
    validate_spec(spec)
    return spec


def _progress_bar(args):
    """A tqdm bar on stderr when it is a terminal, else None."""
    if args.quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm
    bar = tqdm(total=0, unit="it", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done, total, hits):
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(f"{hits} hits", refresh=False)
        bar.refresh()
    return bar, update


def _attach_running(args):
    if getattr(args, "patch_at", None) is not None or getattr(args, "unpatch_at", None) is not None:
        raise GdbfaultError("--patch-at/--unpatch-at go with --qemu; attached to a running QEMU the patch "
                            "goes in at once and comes out on detaching")
    from gdbfault.attach import attach_running, gdbstub_of_pid
    from gdbfault.locations import lab_kernel
    if args.pid is not None:
        address = gdbstub_of_pid(args.pid)
    elif args.socket:
        address = args.socket
    else:
        address = f"127.0.0.1:{args.port}"
    kernel, system_map = (lab_kernel(args.variant) if args.kernel == "lab"
                          else (args.kernel, args.system_map))
    if args.system_map:
        system_map = args.system_map
    if args.kernel == "lab" and not args.system_map:
        system_map = None     # the lab kernel's ELF has full symbols
    if not args.quiet and args.duration is None:
        print(f"counting on {address}; Ctrl-C to stop and report", file=sys.stderr)
    return attach_running(address, kernel, system_map, args.profile,
                          [parse_probe_option(p) for p in args.probe], args.duration, pid=args.pid,
                          live_patch=args.live_patch, keep_patch=args.keep_patch,
                          lab_variant=args.variant if args.kernel == "lab" else None)


def cmd_attach(args):
    from gdbfault.run import RunFailed, run_qemu
    check_outputs(args)
    spec = _spec_from_args(args) if args.qemu else None
    if not args.qemu and args.duration is not None and not args.duration > 0:
        raise GdbfaultError(f"--duration must be positive, not {args.duration:g}")
    bar, update = (None, None) if not args.qemu else _progress_bar(args)
    try:
        if args.qemu:
            result = run_qemu(spec, progress=update)
            if args.verify_with:
                result["verify"] = _verify(spec, result)
        else:
            result = _attach_running(args)
    except RunFailed as failed:
        if args.output:
            save_run(failed.result, args.output)
            failed.args = (f"{failed} (counts so far saved to {args.output})",)
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.output:
        save_run(result, args.output)
    if getattr(args, "plot", None) and (result.get("live_patch") or {}).get("timeline"):
        from gdbfault.plot import plot_live_patch
        plot_live_patch(result, args.plot)
    elif getattr(args, "plot", None):
        from gdbfault.plot import plot_paths
        plot_paths([(kernel_label(result), result)], args.plot)
    sys.stdout.write(render(result, args.format))
    if args.plot and args.format == "table":
        print(f"plot written to {args.plot}")
    if args.output and args.format == "table":
        print(f"saved to {args.output}")
    bad = [c for c in result["checks"] if not c["ok"]]
    disagree = result.get("verify") and not result["verify"]["agree"]
    return 1 if bad or disagree else 0


def _verify(spec, result):
    """Run the same spec on the GDB backend and compare it with the plugin's."""
    import dataclasses
    from gdbfault.plugin_run import cross_check
    from gdbfault.run import run_qemu
    if spec.backend != "plugin":
        raise GdbfaultError("--verify-with gdb goes with --backend plugin")
    return cross_check(result, run_qemu(dataclasses.replace(spec, backend="gdb")))


def cmd_report(args):
    result = load_run(args.run)
    try:
        text = render(result, args.format)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise GdbfaultError(f"{args.run} is not a complete gdbfault run ({type(exc).__name__}: {exc})") from None
    sys.stdout.write(text)
    return 0


def _reap_children(since):
    """Last line of defence after a stop signal: no QEMU or GDB we started survives us."""
    import psutil
    from gdbfault.qemu import kill_tree
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            if child.create_time() >= since - 1 and (child.name().startswith("qemu-system")
                                                     or child.name() in ("gdb", "setsid")):
                kill_tree(child.pid, grace=2.0)
        except psutil.Error:
            pass


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.time()
    reset()
    previous = install_handlers()
    try:
        code = args.func(args)
        late = pending_signal()
        if late is not None:        # a signal that came while a teardown was shielded
            print(f"gdbfault: error: stopped by {signal_label(late)}", file=sys.stderr)
            return 128 + late
        return code
    except GdbfaultError as exc:
        print(f"gdbfault: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2) or 2
    except KeyboardInterrupt as exc:
        stopped = exc if isinstance(exc, Stopped) else Stopped()
        print(f"gdbfault: error: {stopped}", file=sys.stderr)
        return stopped.exit_code
    finally:
        if stop_signal() is not None:
            _reap_children(started)
        restore_handlers(previous)
