"""The `gdbfault` command line: every subcommand's options and its `cmd_*` (attach, report,
compare, check, profile). Nothing imports this module; it imports the layers below.

Every failure ends in one line on stderr, `gdbfault: error: ...`, and a
non-zero exit code (EXIT_CODES); with --output, whatever was measured is
saved first. SIGINT, SIGTERM and SIGHUP end a run the same way (lifecycle.py).
"""
import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from gdbfault import __version__
from gdbfault.base.errors import GdbfaultError
from gdbfault.base.lifecycle import (Stopped, install_handlers, pending_signal, reset, restore_handlers,
                                signal_label, stop_signal)
from gdbfault.base.locations import VARIANTS, WORKLOADS
from gdbfault.model.roles import parse_probe_option
from gdbfault.views.report import FORMATS, kernel_label, load_run, render, save_run
from gdbfault.model.result import as_result
from gdbfault.model.spec import RUN_OPTIONS, RunSpec

__all__ = ["main", "build_parser", "EXIT_CODES", "KERNEL_PROFILE"]

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


def _add_run_options(p, leave_out=()):
    """Options shared by every command that boots a kernel (spec.RUN_OPTIONS), then --plot."""
    for opt in RUN_OPTIONS:
        if opt.cli is not None and opt.key not in leave_out:
            p.add_argument(opt.flag, dest=opt.key, **opt.cli)
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
    at.add_argument("--verify-with", choices=("gdb",), metavar="gdb",
                    help="with --backend plugin: run the GDB backend too and check both agree")
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

    _add_compare_parser(sub)
    _add_check_parser(sub)
    _add_profile_parser(sub)
    ap._subcommands = sub.choices
    return ap


def check_outputs(args):
    """Everything cheap about where results go, before any kernel boots."""
    from gdbfault.views.report import check_writable
    if getattr(args, "output", None):
        check_writable(args.output, "--output")
    if getattr(args, "plot", None):
        from gdbfault.views.plot import require_matplotlib
        check_writable(args.plot, "--plot")
        require_matplotlib()


def _spec_from_args(args):
    """The RunSpec of a command's run options (spec.RunSpec.from_mapping names a bad one by its flag)."""
    if getattr(args, "keep_patch", False):
        raise GdbfaultError("--keep-patch goes with --port/--socket/--pid (gdbfault's own QEMU ends with the run)")
    spec = RunSpec.from_mapping({opt.key: getattr(args, opt.key) for opt in RUN_OPTIONS if hasattr(args, opt.key)})
    if spec.live_patch is not None and getattr(args, "plot", None):
        spec = dataclasses.replace(spec, timeline=True)      # --plot of a live patch draws each path's cost
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
    from gdbfault.backends.running_qemu import attach_running, gdbstub_of_pid
    from gdbfault.base.locations import lab_kernel
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
                          [parse_probe_option(p) for p in args.probes], args.duration, pid=args.pid,
                          live_patch=args.live_patch, keep_patch=args.keep_patch,
                          lab_variant=args.variant if args.kernel == "lab" else None)


def cmd_attach(args):
    from gdbfault.base.errors import RunFailed
    from gdbfault.runs.booted import run_qemu
    check_outputs(args)
    spec = _spec_from_args(args) if args.qemu else None
    if not args.qemu and args.duration is not None and not args.duration > 0:
        raise GdbfaultError(f"--duration must be positive, not {args.duration:g}")
    bar, update = (None, None) if not args.qemu else _progress_bar(args)
    try:
        if args.qemu:
            result = run_qemu(spec, progress=update)
            if args.verify_with:
                result.verify = _verify(spec, result)
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
    run = as_result(result)
    if getattr(args, "plot", None) and run.live_patch is not None and run.live_patch.timeline:
        from gdbfault.views.plot import plot_live_patch
        plot_live_patch(result, args.plot)
    elif getattr(args, "plot", None):
        from gdbfault.views.plot import plot_paths
        plot_paths([(kernel_label(result), result)], args.plot)
    sys.stdout.write(render(result, args.format))
    if args.plot and args.format == "table":
        print(f"plot written to {args.plot}")
    if args.output and args.format == "table":
        print(f"saved to {args.output}")
    disagree = run.verify is not None and not run.verify.agree
    return 1 if run.failed_checks or disagree else 0


def _verify(spec, result):
    """Run the same spec on the GDB backend and compare it with the plugin's."""
    from gdbfault.backends.plugin_backend import cross_check
    from gdbfault.runs.booted import run_qemu
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


# -- gdbfault compare ------------------------------------------------------------

KERNEL_PROFILE = object()     # `compare --profile` given alone


def _add_compare_parser(subparsers):
    from gdbfault.analysis.compare import FORMATS as COMPARE_FORMATS
    p = subparsers.add_parser("compare", help="run two kernels with the same workload, side by side",
                              description="Run a kernel before and after a patch with the same workload "
                                          "and settings, and print hits, path costs and the guest's times "
                                          "side by side with deltas and ratios.",
                              epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="vanilla", metavar="VARIANT|PATH",
                   help="kernel before the change: a lab kernel variant or a kernel image (default: vanilla)")
    p.add_argument("--after", default="patched", metavar="VARIANT|PATH",
                   help="kernel after the change (default: patched)")
    p.add_argument("--before-map", metavar="FILE", help="System.map of the --before kernel")
    p.add_argument("--after-map", metavar="FILE", help="System.map of the --after kernel")
    # The kernels come from --before/--after; --profile has a form of its own below.
    _add_run_options(p, leave_out=("kernel", "variant", "system_map", "profile"))
    # Alone, --profile adds the kernel profile's biggest per-function changes
    # (issue 13); with a value it is still the probe profile (NAME|FILE).
    p.add_argument("--profile", nargs="?", const=KERNEL_PROFILE, metavar="NAME|FILE",
                   help="alone: also profile both kernels (gdbfault profile) and list the functions whose "
                        "instructions per iteration changed most; with a value: the probe profile")
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
        cmp["profile_changes"] = profile_changes(before, after, cmp["labels"])
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


# -- gdbfault check --------------------------------------------------------------

def _add_check_parser(subparsers):
    p = subparsers.add_parser("check", help="run a TOML spec of regression checks (pass/fail, JUnit XML)",
                              description="Run the kernels a spec names and check its expectations "
                                          "over the results. Exit 0 when all pass, 1 when some fail, "
                                          "2 when the spec or a run could not be executed.")
    p.add_argument("spec", metavar="SPEC.toml")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per expectation)")
    p.add_argument("--format", default="table", choices=("table", "json"), help="output (default: table)")
    p.add_argument("--use", action="append", default=[], metavar="RUN=FILE.json",
                   help="take run RUN from a saved run (gdbfault attach --output) instead of running it")
    p.add_argument("--save-runs", metavar="DIR", help="save every run as DIR/RUN.json")
    p.add_argument("--sequential", action="store_true", help="run the kernels one after the other")
    p.set_defaults(func=cmd_check)
    return p


def cmd_check(args):
    from gdbfault.analysis.check.report import error_report, junit_xml, render_check
    from gdbfault.analysis.check.run import check
    from gdbfault.analysis.check.spec import SpecError, load_spec
    spec = load_spec(args.spec)
    loaded = {}
    for use in args.use:
        name, eq, file = use.partition("=")
        if not eq or name not in spec.runs:
            raise SpecError(f"--use {use}: expected RUN=FILE.json with RUN one of {', '.join(spec.runs)}")
        loaded[name] = load_run(file)
    if sys.stderr.isatty():
        todo = [n for n in spec.used_runs() if n not in loaded]
        if todo:
            print(f"running {', '.join(todo)} …", file=sys.stderr)
    try:
        report = check(spec, parallel=not args.sequential, loaded=loaded)
    except GdbfaultError as exc:
        partial = getattr(exc, "partial", None)
        if args.save_runs and partial:           # what the runs measured before they ended
            Path(args.save_runs).mkdir(parents=True, exist_ok=True)
            for name, result in partial.items():
                save_run(result, Path(args.save_runs) / f"{name}.json")
        if args.junit and ("run could not" in str(exc) or getattr(exc, "exit_code", 2) >= 128):
            Path(args.junit).write_text(junit_xml(error_report(spec, str(exc))))
        raise
    if args.save_runs:
        Path(args.save_runs).mkdir(parents=True, exist_ok=True)
        for name, result in report["results"].items():
            save_run(result, Path(args.save_runs) / f"{name}.json")
    if args.junit:
        Path(args.junit).write_text(junit_xml(report))
    out = render_check(report, args.format)
    if args.junit and args.format == "table":
        out = out.rstrip("\n") + f" — {args.junit} written\n"
    sys.stdout.write(out)
    return 0 if report["failed"] == 0 else 1


# -- gdbfault profile: the kernel profile -------------------------------------------
# Exit codes as for attach: 0 ok, 1 kernel + user do not account for the guest's
# own cycle count, 2 bad input or a target the plugin cannot be loaded into
# (--port/--socket/--pid: a running QEMU), 3 the guest went wrong.

def _add_profile_parser(subparsers):
    from gdbfault.kprofile.report import FORMATS as PROFILE_FORMATS
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
    p.add_argument("--format", default="table", choices=PROFILE_FORMATS, help="output format (default: table)")
    p.add_argument("--output", "-o", metavar="FILE", help="save the profile as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the top functions as a bar chart")
    p.add_argument("--keep-run-dir", action="store_true", help="keep QEMU's run directory")
    p.set_defaults(func=cmd_profile)
    return p


def cmd_profile(args):
    from gdbfault.kprofile.run import NOT_ON_RUNNING_QEMU, ProfileSpec, run_profile
    from gdbfault.kprofile.report import plot_profile, render_profile, save_profile
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


# -- the end of every command ------------------------------------------------------

def _reap_children(since):
    """Last line of defence after a stop signal: no QEMU or GDB we started survives us."""
    import psutil
    from gdbfault.machine.qemu import kill_tree
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
