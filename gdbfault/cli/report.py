"""`gdbfault report RUN.json`: re-render a saved run (`--explain`: explain its outliers from its kept recording)."""
import sys
import time
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.views.report import FORMATS, load_run, render, save_run

__all__ = ["add_parser", "cmd_report"]


def add_parser(sub, epilog, formatter):
    rp = sub.add_parser("report", help="re-render a saved run", description="Re-render a run saved with --output.")
    rp.add_argument("run", metavar="RUN.json")
    rp.add_argument("--format", default="table", choices=FORMATS)
    rp.add_argument("--explain", action="store_true",
                    help="explain each path's slowest fault from the run's kept recording (its call tree against "
                         "a typical one's), and save that in RUN.json")
    rp.set_defaults(func=cmd_report)
    return rp


def cmd_report(args):
    result = load_run(args.run)
    if args.explain:
        _explain(args.run, result)
    try:
        text = render(result, args.format)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise GdbfaultError(f"{args.run} is not a complete gdbfault run ({type(exc).__name__}: {exc})") from None
    sys.stdout.write(text)
    return 0


def _explain(run_file, result):
    from gdbfault.inspect.outliers import OUTLIERS_NOT_EXPLAINED, explain_outliers
    rec = result.recording
    if rec is None or not rec.dir or not rec.shapes:
        raise GdbfaultError(f"{run_file} has no kept recording with a fault index to explain its outliers from",
                            "run it again with --output")
    folder = Path(rec.dir) if Path(rec.dir).is_absolute() else Path(run_file).resolve().parent / rec.dir
    rec.outliers = explain_outliers(folder, result, time.monotonic() + 600)
    if rec.note and rec.note.startswith(OUTLIERS_NOT_EXPLAINED):
        rec.note = None
    save_run(result, run_file)
