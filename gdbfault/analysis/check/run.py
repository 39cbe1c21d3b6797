"""`gdbfault check`: run the kernels a spec names and evaluate its expectations.

The spec (TOML, its metric references) is read by spec.py, a metric's
value by analysis/metrics.py, and the report is printed or written as JUnit XML by
report.py. Only the runs that expectations refer to are run, each once,
in parallel when the machine has more than one core (runner.run_all). Exit
status: 0 all pass, 1 some fail, 2 the spec or a run could not be executed
(one line naming file, line and key).
"""
import time

from gdbfault.analysis.check.spec import OPS, SpecError, run_specs
from gdbfault.base.errors import GdbfaultError
from gdbfault.analysis.metrics import MetricError, resolve
from gdbfault.model.result import as_result
from gdbfault.runs.parallel import run_all

__all__ = ["run_spec", "evaluate", "check", "SCHEMA"]

SCHEMA = "gdbfault.check/1"
NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def run_spec(spec, parallel=True, loaded=None):
    """{name: RunResult} for every run the expectations use; runs given in `loaded` are not run."""
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
        raise SpecError(f"{spec.where(spec.expect_line(e.index, key))}: [[expect]] "
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
    """A value as a person reads it: whole numbers as such (up to 15 digits), others in 4 significant
    digits — `factor = 1e308` is 1e+308, not a 309-digit integer."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{int(v)}" if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
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
    runs = {}
    for name, result in results.items():
        r = as_result(result)
        runs[name] = {"kernel": r.kernel.path, "variant": r.kernel.variant, "workload": r.workload.name,
                      "iterations": (r.guest or {}).get("iterations"), "wall_s": r.run.wall_s}
    return {"schema": SCHEMA, "spec": spec.path, "title": spec.title, "runs": runs,
            "expectations": outcomes, "passed": sum(o["passed"] for o in outcomes),
            "failed": sum(not o["passed"] for o in outcomes), "time_s": round(time.monotonic() - t0, 3),
            "results": results}
