"""The `gdbfault` command line: one module per command (attach, report, inspect, compare, check, profile),
each with its options (`add_parser`) and its `cmd_*`; options.py holds what they share. Nothing imports
this package; it imports the layers below.

Every failure ends in one line on stderr, `gdbfault: error: ...`, and a
non-zero exit code (EXIT_CODES); with --output, whatever was measured is
saved first. SIGINT, SIGTERM and SIGHUP end a run the same way (base/lifecycle.py).
"""
import argparse
import sys
import time

from gdbfault import __version__
from gdbfault.base.errors import GdbfaultError
from gdbfault.base.lifecycle import (Stopped, install_handlers, pending_signal, reset, restore_handlers,
                                     signal_label, stop_signal)
from gdbfault.cli import attach, check, compare, inspect, profile, report
from gdbfault.cli.compare import KERNEL_PROFILE
from gdbfault.machine import guardian

__all__ = ["main", "build_parser", "EXIT_CODES", "KERNEL_PROFILE", "COMMANDS"]

EXIT_CODES = """exit codes:
  0    all good
  1    counts disagree with the guest's own summary (or a check failed)
  2    bad input, or a run that could not be carried out
  3    the guest went wrong (oops, panic, hang, QEMU killed)
  130  stopped by Ctrl-C (SIGINT)
  143  stopped by SIGTERM (a CI cancel, `timeout`)
  129  stopped by SIGHUP (the terminal closed)
with --output, what was measured is saved in every case."""

# The commands, in the order --help lists them.
COMMANDS = (attach, report, inspect, compare, check, profile)


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


def build_parser():
    ap = _Parser(prog="gdbfault",
                 description="Live, exact instrumentation of a kernel's page-fault path under QEMU + GDB.",
                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"gdbfault {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub, EXIT_CODES, argparse.RawDescriptionHelpFormatter)
    ap._subcommands = sub.choices
    return ap



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
    if args.command != "report":     # a SIGKILL must not leave a user's guest patched, nor temp folders
        guardian.enable(keep_dirs=getattr(args, "keep_run_dir", False))
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
        guardian.finish()
        restore_handlers(previous)
