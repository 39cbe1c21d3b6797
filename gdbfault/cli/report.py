"""`gdbfault report RUN.json`: re-render a saved run."""
import sys

from gdbfault.base.errors import GdbfaultError
from gdbfault.views.report import FORMATS, load_run, render

__all__ = ["add_parser", "cmd_report"]


def add_parser(sub, epilog, formatter):
    rp = sub.add_parser("report", help="re-render a saved run", description="Re-render a run saved with --output.")
    rp.add_argument("run", metavar="RUN.json")
    rp.add_argument("--format", default="table", choices=FORMATS)
    rp.set_defaults(func=cmd_report)
    return rp


def cmd_report(args):
    result = load_run(args.run)
    try:
        text = render(result, args.format)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise GdbfaultError(f"{args.run} is not a complete gdbfault run ({type(exc).__name__}: {exc})") from None
    sys.stdout.write(text)
    return 0
