"""`gdbfault check SPEC.toml`: run the kernels a spec names and check its expectations (exit 0 pass, 1 fail, 2 error)."""
import sys
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.cli.options import check_outputs
from gdbfault.views.report import load_run, save_run

__all__ = ["add_parser", "cmd_check"]


def add_parser(sub, epilog, formatter):
    p = sub.add_parser("check", help="run a TOML spec of regression checks (pass/fail, JUnit XML)",
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
    check_outputs(args)
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
        if args.save_runs:                        # what the runs measured before they ended
            _save_runs(getattr(exc, "partial", None) or {}, args.save_runs)
        if args.junit and ("run could not" in str(exc) or getattr(exc, "exit_code", 2) >= 128):
            Path(args.junit).write_text(junit_xml(error_report(spec, str(exc))))
        raise
    if args.save_runs:
        _save_runs(report["results"], args.save_runs)
    if args.junit:
        Path(args.junit).write_text(junit_xml(report))
    out = render_check(report, args.format)
    if args.junit and args.format == "table":
        out = out.rstrip("\n") + f" — {args.junit} written\n"
    sys.stdout.write(out)
    return 0 if report["failed"] == 0 else 1


def _save_runs(results, folder):
    """Every run as FOLDER/RUN.json."""
    if not results:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        save_run(result, Path(folder) / f"{name}.json")
