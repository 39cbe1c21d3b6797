"""`gdbfault inspect RUN.json`: open one fault of a run's kept recording."""
import sys

from gdbfault.base.errors import GdbfaultError
from gdbfault.inspect.fault import choose, open_fault
from gdbfault.inspect.show import FORMATS, render_fault
from gdbfault.views.report import load_run

__all__ = ["add_parser", "cmd_inspect"]


def add_parser(sub, epilog, formatter):
    ip = sub.add_parser("inspect", help="open one fault of a run's kept recording",
                        description="Replay a run's kept recording (saved with --output) to one fault's exact "
                                    "instruction and show it: the fault card (mode, access, EIP and the "
                                    "instruction, CR2, the kernel's call chain), where its instructions went "
                                    "(its call tree), and GDB there (--ex, --gdb; reverse-stepi and "
                                    "reverse-continue work).",
                        epilog=epilog, formatter_class=formatter)
    ip.add_argument("run", metavar="RUN.json")
    which = ip.add_argument_group("which fault")
    which.add_argument("--fault", type=int, metavar="N", help="the N-th fault entry of the workload (1-based)")
    which.add_argument("--path", metavar="SHAPE",
                       help="a path shape as the report names it, or user-signal, resolved, kernel-fixup")
    pick = which.add_mutually_exclusive_group()
    pick.add_argument("--max", dest="how", action="store_const", const="max", help="with --path: the slowest")
    pick.add_argument("--min", dest="how", action="store_const", const="min", help="with --path: the fastest")
    pick.add_argument("--nth", type=int, metavar="K", help="with --path: the K-th of that shape")
    which.add_argument("--iteration", type=int, metavar="K",
                       help="the faults of workload iteration K (its first, or with --path the one of that shape)")
    ip.add_argument("--ex", action="append", default=[], metavar="CMD",
                    help="run a GDB command at the fault and print its output (repeatable; then exit)")
    ip.add_argument("--gdb", action="store_true", help="leave me at a GDB prompt at the fault")
    ip.add_argument("--no-tree", dest="tree", action="store_false",
                    help="skip the call tree (it needs the kernel-profile plugin)")
    ip.add_argument("--format", default="table", choices=FORMATS)
    ip.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    ip.set_defaults(func=cmd_inspect)
    return ip


def cmd_inspect(args):
    if args.fault is not None and (args.path or args.iteration is not None):
        raise GdbfaultError("--fault N names one fault: leave out --path and --iteration")
    if (args.how or args.nth is not None) and not args.path:
        raise GdbfaultError("--max, --min and --nth go with --path SHAPE")
    if args.gdb and args.format == "json":
        raise GdbfaultError("--gdb leaves you at a prompt: it goes with --format table")
    result = load_run(args.run)

    def chooser(index):
        return choose(index, fault=args.fault, path=args.path, how=args.how, nth=args.nth,
                      iteration=args.iteration)
    data = open_fault(args.run, result, chooser, commands=args.ex, interactive=args.gdb, tree=args.tree,
                      timeout=args.timeout)
    try:
        sys.stdout.write(render_fault(data, args.format))
        if args.gdb:
            sys.stdout.flush()
            data["interactive"]()
    finally:
        if args.gdb:
            data["close"]()
    return 0
