"""`gdbfault check SPEC.toml`: declarative regression checks over measured runs.

A spec is TOML data (read with tomllib; nothing in it is evaluated as code):

    [defaults]                    # optional: settings every run shares
    workload = "mprotect"
    iterations = 1000

    [runs.vanilla]                # one table per run: kernel, variant, workload,
    variant = "vanilla"           # iterations, profile, system_map, append,
    [runs.patched]                # probes (["ROLE=SYMBOL"]), timeout, cost_sample
    variant = "patched"

    [[expect]]
    name = "patched: user faults never reach the exception search"
    left = "patched.user_fault_searches"
    op = "=="                     # == != < <= > >=
    right = 0                     # a number or a metric reference
    factor = 1.0                  # optional: multiplies right

A metric reference is "RUN.PATH" with PATH one of
    hits.ROLE|SYMBOL          workload-phase hits of a probe, by role or symbol
    boot_hits.ROLE|SYMBOL     boot-phase hits
    per_iteration.ROLE|SYMBOL workload hits per guest iteration
    guest.KEY                 a number from the guest's own summary (sigsegv,
                              efault, demand_pages, cycles_per_iteration,
                              real_ticks, user_ticks, sys_ticks, ...)
    path.SHAPE.STAT           a traced path's count|min|median|p95|max; SHAPE is
                              a shape name or `user-signal` (the run's path of
                              user faults that got SIGSEGV, whatever its shape)
    iteration.STAT            cost of one workload iteration (min|median|p95|max)
    user_fault_searches       user faults that reached the exception search
                              (traced paths with both a search and a signal)
    cycles_per_iteration      the guest's own cycles per iteration
    iterations                the guest's iterations
    before.PATH | after.PATH  of a live-patched run (live_patch = "FILE", patch_at = N):
                              PATH (hits, per_iteration, path, user_fault_searches,
                              iterations) before or after the patch went in

Only the runs that expectations refer to are run, each once, in parallel when
the machine has more than one core. Exit status: 0 all pass, 1 some fail, 2
the spec or a run could not be executed (one line naming file, line and key).
"""
import json
import math
import operator
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.errors import GdbfaultError

__all__ = ["SpecError", "Spec", "Expectation", "load_spec", "parse_spec", "parse_ref", "resolve",
           "evaluate", "run_spec", "check", "render_check", "junit_xml", "add_parser", "OPS", "SCHEMA"]

SCHEMA = "gdbfault.check/1"
OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}
NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
RUN_KEYS = ("kernel", "variant", "workload", "iterations", "profile", "system_map", "append",
            "probes", "timeout", "cost_sample", "live_patch", "patch_at")
PHASES = ("before", "after")          # of a live-patched run (live_patch = FILE)
EXPECT_KEYS = ("name", "left", "op", "right", "factor")
TOP_KEYS = ("title", "description", "defaults", "runs", "expect")
PROBE_CATEGORIES = ("hits", "boot_hits", "per_iteration")
STATS = ("count", "min", "median", "p95", "max")
SCALARS = ("user_fault_searches", "cycles_per_iteration", "iterations")
_RUN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class SpecError(GdbfaultError):
    """The spec cannot be executed; str() names the file, line and key."""
    exit_code = 2


@dataclass
class Expectation:
    name: str
    left: object            # number or (run, category, args) reference
    op: str
    right: object
    factor: float = None
    index: int = 0          # 0-based position among the [[expect]] tables
    line: int = None
    left_text: str = ""
    right_text: str = ""


@dataclass
class Spec:
    path: str
    text: str
    runs: dict                           # name -> RunSpec keyword dict
    expectations: list
    title: str = ""
    run_lines: dict = field(default_factory=dict)

    def used_runs(self):
        names = []
        for e in self.expectations:
            for side in (e.left, e.right):
                if isinstance(side, tuple) and side[0] not in names:
                    names.append(side[0])
        return names


# -- finding lines in the spec text ------------------------------------------------

_HEADER = re.compile(r"^\s*\[")
_EXPECT_HEADER = re.compile(r"^\s*\[\[\s*expect\s*\]\]")


def _key_line(lines, start, key):
    """Line (1-based) of `key = ...` in the table whose header is at index start."""
    pat = re.compile(r"^\s*(?:%s|\"%s\"|'%s')\s*=" % ((re.escape(key),) * 3))
    for i in range(start + 1, len(lines)):
        if _HEADER.match(lines[i]):
            break
        if pat.match(lines[i]):
            return i + 1
    return None


def expect_line(text, index, key=None):
    """Line of the index-th [[expect]] table (or of its key, when present)."""
    lines = text.splitlines()
    n = -1
    for i, line in enumerate(lines):
        if _EXPECT_HEADER.match(line):
            n += 1
            if n == index:
                return (_key_line(lines, i, key) if key else None) or i + 1
    return None


def table_line(text, dotted, key=None):
    """Line of table [dotted] (e.g. runs.patched), or of its key."""
    parts = dotted.split(".")
    pat = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(r"(?:%s|\"%s\")" % (re.escape(p), re.escape(p))
                                                       for p in parts) + r"\s*\]")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if pat.match(line):
            return (_key_line(lines, i, key) if key else None) or i + 1
    return None


def _where(spec_path, line):
    return f"{spec_path}:{line}" if line else f"{spec_path}"


# -- parsing -------------------------------------------------------------------------

def load_spec(path):
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"check spec not found: {path}")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read check spec {path}: {exc}")
    return parse_spec(text, str(path))


def parse_spec(text, path="<spec>"):
    import tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = m.group(1) if m else None
        raise SpecError(f"{_where(path, line)}: not valid TOML: {re.sub(r' ?[(]at line.*[)]', '', msg)}")
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(f"{_where(path, _top_line(text, key))}: key '{key}': unknown top-level key "
                            f"— a spec has {', '.join(TOP_KEYS)}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SpecError(f"{_where(path, _top_line(text, 'defaults'))}: key 'defaults': must be a table")
    _check_run_keys(defaults, path, text, "defaults")
    runs_data = data.get("runs", {})
    if not isinstance(runs_data, dict) or not runs_data:
        raise SpecError(f"{_where(path, _top_line(text, 'runs'))}: key 'runs': the spec needs at least one "
                        "[runs.NAME] table")
    runs, run_lines = {}, {}
    for name, table in runs_data.items():
        line = table_line(text, f"runs.{name}")
        run_lines[name] = line
        if not _RUN_NAME.match(name):
            raise SpecError(f"{_where(path, line)}: key 'runs.{name}': a run name is letters, digits, _ and -")
        if not isinstance(table, dict):
            raise SpecError(f"{_where(path, line)}: key 'runs.{name}': must be a table")
        _check_run_keys(table, path, text, f"runs.{name}")
        runs[name] = {**defaults, **table}
    expect_data = data.get("expect", [])
    if not isinstance(expect_data, list) or not expect_data:
        raise SpecError(f"{_where(path, _top_line(text, 'expect'))}: key 'expect': the spec needs at least "
                        "one [[expect]] table")
    expectations = [_parse_expectation(e, i, runs, path, text) for i, e in enumerate(expect_data)]
    return Spec(path, text, runs, expectations, str(data.get("title", "")), run_lines)


def _top_line(text, key):
    for i, line in enumerate(text.splitlines()):
        if re.match(r"^\s*(\[\[?\s*)?%s\b" % re.escape(key), line):
            return i + 1
    return None


def _check_run_keys(table, path, text, where):
    types = {"iterations": int, "cost_sample": int, "timeout": (int, float), "probes": list, "patch_at": int}
    for key, value in table.items():
        line = table_line(text, where, key)
        if key not in RUN_KEYS:
            raise SpecError(f"{_where(path, line)}: [{where}] key '{key}': unknown run setting "
                            f"— choose from {', '.join(RUN_KEYS)}")
        want = types.get(key, str)
        if isinstance(value, bool) or not isinstance(value, want):
            raise SpecError(f"{_where(path, line)}: [{where}] key '{key}': expected "
                            f"{'a number' if key == 'timeout' else 'an integer' if want is int else 'a list' if want is list else 'a string'}, "
                            f"got {value!r}")
        if key in ("iterations", "cost_sample", "timeout") and value <= 0:
            raise SpecError(f"{_where(path, line)}: [{where}] key '{key}': must be positive, not {value}")


def _parse_expectation(e, index, runs, path, text):
    def fail(key, what):
        line = expect_line(text, index, key)
        label = f" (\"{e.get('name')}\")" if isinstance(e, dict) and isinstance(e.get("name"), str) else ""
        raise SpecError(f"{_where(path, line)}: [[expect]] #{index + 1}{label}: key '{key}': {what}")

    if not isinstance(e, dict):
        fail("expect", "each expectation must be a table")
    for key in e:
        if key not in EXPECT_KEYS:
            fail(key, f"unknown key — an expectation has {', '.join(EXPECT_KEYS)}")
    for key in ("name", "left", "op", "right"):
        if key not in e:
            fail(key, "missing")
    if not isinstance(e["name"], str) or not e["name"].strip():
        fail("name", "must be a non-empty string")
    if e["op"] not in OPS:
        fail("op", f"unknown operator {e['op']!r} — choose one of {' '.join(OPS)}")
    sides = {}
    for key in ("left", "right"):
        value = e[key]
        if _is_number(value):
            sides[key] = value
        elif isinstance(value, str):
            try:
                sides[key] = parse_ref(value, runs)
            except ValueError as exc:
                fail(key, str(exc))
        else:
            fail(key, f"must be a number or a metric reference \"RUN.PATH\", not {value!r}")
    factor = e.get("factor")
    if factor is not None and not _is_number(factor):
        fail("factor", f"must be a number, not {factor!r}")
    return Expectation(e["name"], sides["left"], e["op"], sides["right"], factor, index,
                       expect_line(text, index), _text(e["left"]), _text(e["right"]))


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(v):
    return v if isinstance(v, str) else repr(v)


def parse_ref(ref, runs):
    """'RUN.PATH' -> (run, category, args); ValueError with a readable reason."""
    run, dot, rest = ref.partition(".")
    if run not in runs:
        known = ", ".join(runs) or "none"
        raise ValueError(f"{ref!r} refers to unknown run '{run}' (runs: {known})")
    if not dot or not rest:
        raise ValueError(f"{ref!r} names no metric after the run (e.g. '{run}.hits.force_sig')")
    cat, _, arg = rest.partition(".")
    if cat in PHASES:
        if not arg:
            raise ValueError(f"{ref!r}: '{cat}' needs a metric after it (e.g. '{run}.{cat}.per_iteration."
                             "search_exception_table')")
        _run, inner, inner_args = parse_ref(f"{run}.{arg}", runs)
        if inner in ("guest", "cycles_per_iteration", "boot_hits", "iteration"):
            raise ValueError(f"{ref!r}: '{inner}' is a whole-run metric; '{cat}.' takes hits, per_iteration, "
                             "path, user_fault_searches or iterations")
        return (run, "phase", (cat, inner, inner_args))
    if cat in SCALARS:
        if arg:
            raise ValueError(f"{ref!r}: '{cat}' takes nothing after it")
        return (run, cat, ())
    if cat in PROBE_CATEGORIES or cat == "guest":
        if not arg:
            raise ValueError(f"{ref!r}: '{cat}' needs a {'key' if cat == 'guest' else 'role or symbol'} "
                             f"after it (e.g. '{run}.{cat}.{'sigsegv' if cat == 'guest' else 'force_sig'}')")
        return (run, cat, (arg,))
    if cat == "path":
        shape, _, stat = arg.rpartition(".")
        if not shape or stat not in STATS:
            raise ValueError(f"{ref!r}: a path metric is '{run}.path.SHAPE.STAT' with STAT one of "
                             f"{', '.join(STATS)}")
        return (run, cat, (shape, stat))
    if cat == "iteration":
        if arg not in STATS[1:]:
            raise ValueError(f"{ref!r}: an iteration metric is '{run}.iteration.STAT' with STAT one of "
                             f"{', '.join(STATS[1:])}")
        return (run, cat, (arg,))
    raise ValueError(f"{ref!r}: unknown metric '{cat}' — choose one of "
                     f"{', '.join(PROBE_CATEGORIES + ('guest', 'path', 'iteration') + SCALARS)}")


# -- resolving metrics on a RunResult ------------------------------------------------

class MetricError(Exception):
    """A reference that cannot be read from this run (an error, not a failure)."""


def resolve(result, category, args=()):
    """The value of a metric on a RunResult dict; None when the run has no such path."""
    if category == "phase":
        from gdbfault.livepatch_run import phase_view
        phase, inner, inner_args = args
        view = phase_view(result, phase)
        if view is None:
            raise MetricError(f"'{phase}.' needs a live-patched run (live_patch = FILE in its [runs] table)")
        return resolve(view, inner, inner_args)
    if category in PROBE_CATEGORIES:
        (name,) = args
        probe = next((p for p in result.get("probes", []) if p["role"] == name), None) \
            or next((p for p in result.get("probes", []) if p["symbol"] == name), None)
        if probe is None:
            known = ", ".join(f"{p['role']} ({p['symbol']})" for p in result.get("probes", []))
            raise MetricError(f"no probe with role or symbol '{name}' (probes: {known})")
        if category == "hits":
            return probe["hits"]["workload"]
        if category == "boot_hits":
            return probe["hits"]["boot"]
        return probe.get("per_iteration")
    guest = result.get("guest") or {}
    if category == "guest":
        (key,) = args
        if not _is_number(guest.get(key)):
            known = ", ".join(k for k, v in guest.items() if _is_number(v))
            raise MetricError(f"the guest's summary has no number '{key}' (it has: {known or 'nothing'})")
        return guest[key]
    if category in ("cycles_per_iteration", "iterations"):
        if not _is_number(guest.get(category)):
            raise MetricError(f"the guest's summary has no '{category}'")
        return guest[category]
    paths = result.get("paths")
    if paths is None:
        raise MetricError("the run traced no fault paths (it needs tracing and a fault-entry probe)")
    if category == "user_fault_searches":
        from gdbfault.paths import user_fault_searches
        return user_fault_searches(paths)
    if category == "path":
        from gdbfault.compare import user_signal_path
        shape, stat = args
        row = user_signal_path(result) if shape == "user-signal" else \
            next((p for p in paths if p["shape"] == shape), None)
        if row is None:
            return 0 if stat == "count" else None
        return row.get(stat)
    if category == "iteration":
        return ((result.get("trace") or {}).get("iteration") or {}).get(args[0])
    raise MetricError(f"unknown metric '{category}'")


# -- running and evaluating ----------------------------------------------------------

def run_specs(spec, names):
    """{name: RunSpec} for the named runs of a spec."""
    from gdbfault.locations import VARIANTS
    from gdbfault.profiles import parse_probe_option
    from gdbfault.run import RunSpec
    out = {}
    for name in names:
        cfg = dict(spec.runs[name])
        line = spec.run_lines.get(name)
        try:
            variant = cfg.get("variant", "vanilla")
            if cfg.get("kernel", "lab") == "lab" and variant not in VARIANTS:
                raise GdbfaultError(f"unknown lab kernel variant '{variant}' (choose one of "
                                    f"{', '.join(VARIANTS)})")
            probes = [parse_probe_option(p) for p in cfg.get("probes", [])]
        except GdbfaultError as exc:
            key = "variant" if "variant" in str(exc) else "probes"
            raise SpecError(f"{_where(spec.path, table_line(spec.text, f'runs.{name}', key) or line)}: "
                            f"[runs.{name}] key '{key}': {exc}")
        live_patch = None
        if cfg.get("live_patch"):
            from gdbfault.livepatch_run import LivePatchSpec
            patch_file = Path(cfg["live_patch"])
            if not patch_file.is_absolute():
                for base in (Path(spec.path).parent, Path.cwd()):
                    if (base / patch_file).exists():
                        patch_file = (base / patch_file).resolve()
                        break
            live_patch = LivePatchSpec(str(patch_file), cfg.get("patch_at"))
        kernel = cfg.get("kernel", "lab")
        if kernel != "lab" and not Path(kernel).is_absolute():
            kernel = str((Path(spec.path).parent / kernel).resolve()) \
                if (Path(spec.path).parent / kernel).exists() else kernel
        out[name] = RunSpec(kernel=kernel, variant=variant, system_map=cfg.get("system_map"),
                            workload=cfg.get("workload", "mprotect"), iterations=cfg.get("iterations"),
                            append=cfg.get("append", ""), profile=cfg.get("profile"), extra_probes=probes,
                            timeout_s=float(cfg.get("timeout", 600.0)), cost_sample=cfg.get("cost_sample", 1),
                            live_patch=live_patch)
    return out


def run_spec(spec, parallel=True, loaded=None):
    """{name: RunResult} for every run the expectations use; runs given in `loaded` are not run."""
    from gdbfault.compare import run_all
    loaded = dict(loaded or {})
    todo = [n for n in spec.used_runs() if n not in loaded]
    specs = run_specs(spec, todo)
    try:
        results = run_all(specs, parallel=parallel) if specs else {}
    except GdbfaultError as exc:
        if getattr(exc, "exit_code", 2) >= 128:     # stopped by a signal: keep its exit code
            raise
        err = SpecError(f"a run could not be carried out: {exc}")
        err.partial = getattr(exc, "partial", {})
        raise err from None
    return {**loaded, **results}


def _value(side, results, spec, e, key):
    if not isinstance(side, tuple):
        return side
    run, cat, args = side
    try:
        return resolve(results[run], cat, args)
    except MetricError as exc:
        raise SpecError(f"{_where(spec.path, expect_line(spec.text, e.index, key))}: [[expect]] "
                        f"#{e.index + 1} (\"{e.name}\"): key '{key}': {getattr(e, key + '_text')}: {exc}")


def evaluate(spec, results):
    """[{name, left, op, right, factor, left_value, right_value, passed, message}]."""
    outcomes = []
    for e in spec.expectations:
        lv = _value(e.left, results, spec, e, "left")
        rv = _value(e.right, results, spec, e, "right")
        raw_right = rv
        if rv is not None and e.factor is not None:
            rv = rv * e.factor
        passed = lv is not None and rv is not None and bool(OPS[e.op](lv, rv))
        outcomes.append({"name": e.name, "left": e.left_text, "op": e.op, "right": e.right_text,
                         "factor": e.factor, "left_value": lv, "right_value": raw_right,
                         "compared_with": rv, "passed": passed, "line": e.line,
                         "detail": _detail(lv, e.op if passed else NEGATED[e.op], raw_right, e.factor, rv)})
    return outcomes


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() else f"{int(v)}"
    return str(v)


def _detail(lv, op, rv, factor, compared):
    if factor is None:
        return f"{_fmt(lv)} {op} {_fmt(rv)}"
    return f"{_fmt(lv)} {op} {_fmt(rv)} × {_fmt(factor)} = {_fmt(compared)}"


def check(spec, parallel=True, loaded=None):
    """Run and evaluate a spec: the check report dict (schema gdbfault.check/1)."""
    t0 = time.monotonic()
    results = run_spec(spec, parallel=parallel, loaded=loaded)
    outcomes = evaluate(spec, results)
    runs = {name: {"kernel": r["kernel"]["path"], "variant": r["kernel"].get("variant"),
                   "workload": r["workload"]["name"], "iterations": (r.get("guest") or {}).get("iterations"),
                   "wall_s": r["run"].get("wall_s")} for name, r in results.items()}
    return {"schema": SCHEMA, "spec": spec.path, "title": spec.title, "runs": runs,
            "expectations": outcomes, "passed": sum(o["passed"] for o in outcomes),
            "failed": sum(not o["passed"] for o in outcomes), "time_s": round(time.monotonic() - t0, 3),
            "results": results}


# -- output --------------------------------------------------------------------------

def render_check(report, fmt="table"):
    if fmt == "json":
        slim = {k: v for k, v in report.items() if k != "results"}
        return json.dumps(slim, indent=1) + "\n"
    width = max(len(o["name"]) for o in report["expectations"]) if report["expectations"] else 0
    lines = [f" {'✓' if o['passed'] else '✗'} {o['name']:<{width}}  {o['detail']}"
             for o in report["expectations"]]
    lines.append(f"{report['passed']} passed, {report['failed']} failed")
    return "\n".join(lines) + "\n"


def junit_xml(report):
    """JUnit XML text: one testsuite, one testcase per expectation."""
    suite = ET.Element("testsuite", name=f"gdbfault check {Path(report['spec']).name}",
                       tests=str(len(report["expectations"])), failures=str(report["failed"]),
                       errors=str(report.get("errors", 0)), time=f"{report.get('time_s') or 0:.3f}")
    props = ET.SubElement(suite, "properties")
    for name, run in (report.get("runs") or {}).items():
        ET.SubElement(props, "property", name=f"run.{name}",
                      value=f"{run['variant'] or run['kernel']} · {run['workload']} × {run['iterations']}")
    classname = Path(report["spec"]).stem
    for o in report["expectations"]:
        case = ET.SubElement(suite, "testcase", classname=classname, name=o["name"])
        if o.get("error"):
            err = ET.SubElement(case, "error", message=o["error"])
            err.text = o["error"]
        elif not o["passed"]:
            fail = ET.SubElement(case, "failure",
                                 message=f"expectation '{o['name']}' failed: {o['detail']}")
            fail.text = (f"expected: {o['left']} {o['op']} {o['right']}"
                         + (f" × {o['factor']}" if o.get("factor") is not None else "")
                         + f"\nmeasured: {o['detail']}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _error_report(spec, message):
    """A report where every expectation is an error (the runs could not be made)."""
    return {"spec": spec.path, "runs": {}, "failed": 0, "errors": len(spec.expectations),
            "expectations": [{"name": e.name, "error": message, "passed": False}
                             for e in spec.expectations]}


# -- command line ----------------------------------------------------------------

def add_parser(subparsers):
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
    from gdbfault.report import load_run, save_run
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
            Path(args.junit).write_text(junit_xml(_error_report(spec, str(exc))))
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
