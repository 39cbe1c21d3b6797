"""`gdbfault check` specs: reading a TOML spec, checking it, and the RunSpecs it names.

A spec is TOML data (read with tomllib; nothing in it is evaluated as code):

    [defaults]                    # optional: settings every run shares
    workload = "mprotect"
    iterations = 1000

    [runs.vanilla]                # one table per run; its keys are the run options
    variant = "vanilla"           # of spec.RUN_OPTIONS (kernel, variant, workload,
    [runs.patched]                # iterations, profile, system_map, append, probes
    variant = "patched"           # (["ROLE=SYMBOL"]), timeout, cost_sample, ...)

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
(metrics.py reads them). A problem with a spec is one line naming its file,
line and key (SpecError, exit 2).
"""
import operator
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import read_input_text
from gdbfault.analysis.metrics import is_number, parse_ref
from gdbfault.model.spec import RunSpec, check_mapping

__all__ = ["SpecError", "Spec", "Expectation", "LineFinder", "load_spec", "parse_spec", "run_specs", "OPS",
           "EXPECT_KEYS", "TOP_KEYS"]

# What `op` may be, and what it does (checks.evaluate applies it).
OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}
EXPECT_KEYS = ("name", "left", "op", "right", "factor")
TOP_KEYS = ("title", "description", "defaults", "runs", "expect")
_RUN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class SpecError(GdbfaultError):
    """The spec cannot be executed; str() names the file, line and key."""
    exit_code = 2


class LineFinder:
    """Where an item of a TOML text starts, as tomllib itself reads it.

    tomllib gives no positions; the line of an item is the first line at
    which a prefix of the text (whole lines) holds it. Each prefix is parsed
    once, on the first question; a prefix that cuts a multi-line value in
    two does not parse and holds nothing.
    """

    def __init__(self, text):
        self._lines = text.splitlines(keepends=True)
        self._prefixes = None

    def line(self, *keys):
        """1-based line where the item at keys starts (an int key indexes an array of tables), or None."""
        if self._prefixes is None:
            self._prefixes = []
            for end in range(1, len(self._lines) + 1):
                try:
                    self._prefixes.append(tomllib.loads("".join(self._lines[:end])))
                except tomllib.TOMLDecodeError:
                    self._prefixes.append(None)
        for number, data in enumerate(self._prefixes, 1):
            if data is not None and _holds(data, keys):
                return number
        return None


def _holds(data, keys):
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or len(data) <= key:
                return False
        elif not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


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
    runs: dict                           # name -> {run option key: value} (defaults applied)
    expectations: list
    title: str = ""
    run_lines: dict = field(default_factory=dict)
    lines: LineFinder = None

    def __post_init__(self):
        if self.lines is None:
            self.lines = LineFinder(self.text)

    def used_runs(self):
        names = []
        for e in self.expectations:
            for side in (e.left, e.right):
                if isinstance(side, tuple) and side[0] not in names:
                    names.append(side[0])
        return names

    def expect_line(self, index, key=None):
        """Line of the index-th [[expect]] table, or of its key when it has it."""
        return (self.lines.line("expect", index, key) if key else None) or self.lines.line("expect", index)

    def where(self, line):
        return f"{self.path}:{line}" if line else f"{self.path}"


def load_spec(path):
    path = Path(path)
    try:
        text = read_input_text(path, "spec")
    except GdbfaultError as exc:
        raise SpecError(str(exc)) from None
    return parse_spec(text, str(path))


def parse_spec(text, path="<spec>"):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)        # tomllib puts the position in its message: "... (at line N, column M)"
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = m.group(1) if m else None
        raise SpecError(f"{_at(path, line)}: not valid TOML: {re.sub(r' ?[(]at line.*[)]', '', msg)}")
    spec = Spec(path, text, {}, [], str(data.get("title", "")))
    lines = spec.lines
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(f"{spec.where(lines.line(key))}: key '{key}': unknown top-level key "
                            f"— a spec has {', '.join(TOP_KEYS)}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SpecError(f"{spec.where(lines.line('defaults'))}: key 'defaults': must be a table")
    _check_run_table(spec, defaults, ("defaults",))
    runs_data = data.get("runs", {})
    if not isinstance(runs_data, dict) or not runs_data:
        raise SpecError(f"{spec.where(lines.line('runs'))}: key 'runs': the spec needs at least one "
                        "[runs.NAME] table")
    for name, table in runs_data.items():
        line = lines.line("runs", name)
        spec.run_lines[name] = line
        if not _RUN_NAME.match(name):
            raise SpecError(f"{spec.where(line)}: key 'runs.{name}': a run name is letters, digits, _ and -")
        if not isinstance(table, dict):
            raise SpecError(f"{spec.where(line)}: key 'runs.{name}': must be a table")
        _check_run_table(spec, table, ("runs", name))
        spec.runs[name] = {**defaults, **table}
    expect_data = data.get("expect", [])
    if not isinstance(expect_data, list) or not expect_data:
        raise SpecError(f"{spec.where(lines.line('expect'))}: key 'expect': the spec needs at least "
                        "one [[expect]] table")
    spec.expectations = [_parse_expectation(e, i, spec) for i, e in enumerate(expect_data)]
    return spec


def _at(path, line):
    return f"{path}:{line}" if line else f"{path}"


def _check_run_table(spec, table, keys):
    """Keys and types of a [defaults] or [runs.NAME] table (values are checked when its RunSpec is built)."""
    label = ".".join(keys)
    try:
        check_mapping(table, where=lambda key: f"{spec.where(spec.lines.line(*keys, key))}: [{label}] key '{key}':")
    except GdbfaultError as exc:
        raise SpecError(str(exc)) from None


def _parse_expectation(e, index, spec):
    def fail(key, what):
        label = f" (\"{e.get('name')}\")" if isinstance(e, dict) and isinstance(e.get("name"), str) else ""
        raise SpecError(f"{spec.where(spec.expect_line(index, key))}: [[expect]] #{index + 1}{label}: "
                        f"key '{key}': {what}")

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
        if is_number(value):
            sides[key] = value
        elif isinstance(value, str):
            try:
                sides[key] = parse_ref(value, spec.runs)
            except ValueError as exc:
                fail(key, str(exc))
        else:
            fail(key, f"must be a number or a metric reference \"RUN.PATH\", not {value!r}")
    factor = e.get("factor")
    if factor is not None and not is_number(factor):
        fail("factor", f"must be a number, not {factor!r}")
    return Expectation(e["name"], sides["left"], e["op"], sides["right"], factor, index,
                       spec.expect_line(index), _text(e["left"]), _text(e["right"]))


def _text(v):
    return v if isinstance(v, str) else repr(v)


def _relative_to_spec(spec, file, also_cwd=False):
    """A relative file name in a spec means next to the spec when it is there (or in the cwd)."""
    path = Path(file)
    if path.is_absolute():
        return file
    for base in (Path(spec.path).parent,) + ((Path.cwd(),) if also_cwd else ()):
        if (base / path).exists():
            return str((base / path).resolve())
    return file


def run_specs(spec, names):
    """{name: RunSpec} for the named runs of a spec (SpecError naming the line and key of a bad value)."""
    out = {}
    for name in names:
        cfg = dict(spec.runs[name])
        if cfg.get("kernel", "lab") != "lab":
            cfg["kernel"] = _relative_to_spec(spec, cfg["kernel"])
        if cfg.get("live_patch"):
            cfg["live_patch"] = _relative_to_spec(spec, cfg["live_patch"], also_cwd=True)

        def where(key, name=name):
            line = (spec.lines.line("runs", name, key) or spec.lines.line("defaults", key)
                    or spec.run_lines.get(name))
            return f"{spec.where(line)}: [runs.{name}] key '{key}':"
        try:
            out[name] = RunSpec.from_mapping(cfg, where=where)
        except GdbfaultError as exc:
            raise SpecError(str(exc)) from None
    return out
