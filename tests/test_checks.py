"""Unit tests for `gdbfault check` (analysis/check/: spec, run, report; analysis/metrics.py) and
`gdbfault compare` rows (analysis/compare.py).

The RunResults under tests/data/ were recorded from real runs:
  check-{vanilla,patched}-mprotect-1000.json   `gdbfault check qemu/checks/seed-patch.toml --save-runs`
  check-broken-mprotect-300.json               the broken build (variants/broken), 300 iterations
"""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gdbfault.analysis.check import report as checkreport
from gdbfault.analysis.check import run as checks
from gdbfault.analysis.check import spec as checkspec
from gdbfault.analysis import metrics
from gdbfault.analysis.check.run import evaluate
from gdbfault.analysis.check.spec import SpecError, load_spec, parse_spec
from gdbfault.cli import main
from gdbfault.analysis.compare import SEED, build_comparison, render_compare
from gdbfault.analysis.metrics import resolve, user_signal_path
from gdbfault.base.errors import GdbfaultError

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SEED_SPEC = REPO / "qemu" / "checks" / "seed-patch.toml"
BROKEN_SPEC = REPO / "qemu" / "checks" / "seed-patch-broken.toml"


def run(name):
    return json.loads((DATA / f"check-{name}.json").read_text())


@pytest.fixture(scope="module")
def vanilla():
    return run("vanilla-mprotect-1000")


@pytest.fixture(scope="module")
def patched():
    return run("patched-mprotect-1000")


@pytest.fixture(scope="module")
def broken():
    return run("broken-mprotect-300")


SMALL = """\
[runs.a]
variant = "vanilla"
iterations = 10

[runs.b]
variant = "patched"

[[expect]]
name = "first"
left = "a.hits.force_sig"
op = "=="
right = "a.guest.sigsegv"

[[expect]]
name = "second"
left = "b.cycles_per_iteration"
op = "<="
right = "a.cycles_per_iteration"
factor = 0.9
"""


# -- spec parsing -----------------------------------------------------------------

def test_parse_small_spec():
    spec = parse_spec(SMALL, "small.toml")
    assert list(spec.runs) == ["a", "b"]
    assert spec.runs["a"] == {"variant": "vanilla", "iterations": 10}
    assert spec.used_runs() == ["a", "b"]
    e0, e1 = spec.expectations
    assert e0.left == ("a", "hits", ("force_sig",)) and e0.right == ("a", "guest", ("sigsegv",))
    assert e0.line == 8 and e1.line == 14
    assert e1.factor == 0.9 and e1.op == "<="


def test_defaults_apply_to_every_run():
    spec = parse_spec('[defaults]\niterations = 7\nworkload = "mprotect"\n' + SMALL, "s.toml")
    assert spec.runs["a"]["iterations"] == 10          # the run's own setting wins
    assert spec.runs["b"] == {"iterations": 7, "workload": "mprotect", "variant": "patched"}


def test_unused_runs_are_not_run():
    spec = parse_spec(SMALL.replace('"b.cycles_per_iteration"', '"a.cycles_per_iteration"')
                      .replace('right = "a.cycles_per_iteration"', "right = 5000"), "s.toml")
    assert spec.used_runs() == ["a"]


def test_shipped_specs_parse():
    seed = load_spec(SEED_SPEC)
    assert seed.used_runs() == ["vanilla", "patched"]
    assert all(r["iterations"] == 1000 and r["workload"] == "mprotect" for r in seed.runs.values())
    brk = load_spec(BROKEN_SPEC)
    assert brk.used_runs() == ["vanilla", "broken"]
    assert len(brk.expectations) == len(seed.expectations)


def test_spec_builds_run_specs():
    spec = parse_spec(SMALL.replace('iterations = 10', 'iterations = 10\nprobes = ["extra=do_exit"]\n'
                                                       'append = "quiet"'), "s.toml")
    specs = checkspec.run_specs(spec, ["a", "b"])
    assert specs["a"].variant == "vanilla" and specs["a"].iterations == 10
    assert specs["a"].extra_probes == [("extra", "do_exit")] and specs["a"].append == "quiet"
    assert specs["b"].variant == "patched" and specs["b"].iterations is None


# -- spec errors: one line naming the file, the line and the key -------------------

def _error(text):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.toml")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_toml_syntax_error_names_line():
    msg = _error(SMALL.replace('op = "<="', 'op = <='))
    assert msg.startswith("spec.toml:17: not valid TOML")


def test_unknown_operator_names_line_and_key():
    msg = _error(SMALL.replace('op = "<="', 'op = "=<"'))
    assert msg.startswith("spec.toml:17:") and "key 'op'" in msg and "'=<'" in msg
    assert '"second"' in msg and "== != < <= > >=" in msg


def test_missing_key_names_the_table_line():
    msg = _error(SMALL.replace('op = "=="\n', ""))
    assert msg.startswith("spec.toml:8:") and "key 'op': missing" in msg and "#1" in msg


def test_unknown_run_names_line():
    msg = _error(SMALL.replace('right = "a.guest.sigsegv"', 'right = "c.guest.sigsegv"'))
    assert msg.startswith("spec.toml:12:") and "key 'right'" in msg and "unknown run 'c'" in msg


def test_unknown_metric_names_line():
    msg = _error(SMALL.replace('"a.hits.force_sig"', '"a.hitz.force_sig"'))
    assert msg.startswith("spec.toml:10:") and "key 'left'" in msg and "unknown metric 'hitz'" in msg


def test_bad_path_stat():
    msg = _error(SMALL.replace('"a.hits.force_sig"', '"a.path.user-signal.mean"'))
    assert msg.startswith("spec.toml:10:") and "STAT one of" in msg


def test_unknown_expect_key_and_bad_factor():
    assert "key 'fator'" in _error(SMALL.replace("factor = 0.9", "fator = 0.9"))
    msg = _error(SMALL.replace("factor = 0.9", 'factor = "0.9"'))
    assert msg.startswith("spec.toml:19:") and "key 'factor'" in msg


def test_unknown_run_setting_names_line():
    msg = _error(SMALL.replace("iterations = 10", "iteratons = 10"))
    assert msg.startswith("spec.toml:3:") and "[runs.a] key 'iteratons'" in msg


def test_wrong_run_setting_type():
    msg = _error(SMALL.replace("iterations = 10", 'iterations = "10"'))
    assert msg.startswith("spec.toml:3:") and "key 'iterations'" in msg and "integer" in msg


def test_no_expectations_and_no_runs():
    assert "at least one [[expect]]" in _error(SMALL.split("[[expect]]")[0])
    assert "[runs.NAME]" in _error("[[expect]]\nname='x'\nleft=1\nop='=='\nright=1\n")


def test_unknown_top_level_key():
    msg = _error("tittle = 'x'\n" + SMALL)
    assert msg.startswith("spec.toml:1:") and "key 'tittle'" in msg


def test_nothing_is_evaluated():
    # An expression is a string that must parse as a metric reference, never code.
    msg = _error(SMALL.replace('right = "a.guest.sigsegv"', 'right = "__import__(\'os\').system(\'false\')"'))
    assert "unknown run" in msg


def test_unknown_variant_is_a_spec_error():
    spec = parse_spec(SMALL.replace('variant = "patched"', 'variant = "nosuch"'), "spec.toml")
    with pytest.raises(SpecError) as info:
        checkspec.run_specs(spec, ["b"])
    assert str(info.value).startswith("spec.toml:6:") and "key 'variant'" in str(info.value)


# -- metrics on recorded runs ------------------------------------------------------

def test_resolve_hits_by_role_and_symbol(vanilla, patched):
    assert resolve(vanilla, "hits", ("exception search",)) == 1000
    assert resolve(vanilla, "hits", ("search_exception_table",)) == 1000
    assert resolve(patched, "hits", ("search_exception_table",)) == 0
    assert resolve(patched, "per_iteration", ("force_sig",)) == 1.0
    assert resolve(vanilla, "per_iteration", ("fault entry",)) == 2.0
    assert resolve(vanilla, "boot_hits", ("force_sig",)) == 0


def test_resolve_guest_and_scalars(vanilla, patched):
    assert resolve(patched, "guest", ("sigsegv",)) == 1000
    assert resolve(patched, "guest", ("efault",)) == 0
    assert resolve(vanilla, "cycles_per_iteration") == vanilla["guest"]["cycles_per_iteration"]
    assert resolve(vanilla, "iterations") == 1000


def test_user_fault_searches(vanilla, patched, broken):
    assert resolve(vanilla, "user_fault_searches") == 1000
    assert resolve(patched, "user_fault_searches") == 0
    assert resolve(broken, "user_fault_searches") == 300


def test_user_signal_alias_follows_each_runs_shape(vanilla, patched, broken):
    assert user_signal_path(vanilla).shape == "user bad area → exception search → signal"
    assert user_signal_path(patched).shape == "user bad area → signal"
    assert user_signal_path(broken).events == ["exception search", "exception search", "signal forced"]
    assert resolve(vanilla, "path", ("user-signal", "median")) == 347
    assert resolve(patched, "path", ("user-signal", "median")) == 95
    assert resolve(patched, "path", ("user bad area → signal", "count")) == 1000
    assert resolve(patched, "path", ("user bad area → exception search → signal", "count")) == 0
    assert resolve(patched, "path", ("user bad area → exception search → signal", "median")) is None


def test_resolve_errors(vanilla):
    with pytest.raises(metrics.MetricError, match="no probe with role or symbol 'nosuch'"):
        resolve(vanilla, "hits", ("nosuch",))
    with pytest.raises(metrics.MetricError, match="no number 'bogus'"):
        resolve(vanilla, "guest", ("bogus",))
    untraced = {k: v for k, v in vanilla.items() if k != "paths"}
    with pytest.raises(metrics.MetricError, match="traced no fault paths"):
        resolve(untraced, "user_fault_searches")


# -- evaluation: ops, factor --------------------------------------------------------

def _one(left, op, right, factor=None):
    text = (f'[runs.v]\nvariant = "vanilla"\n[runs.p]\nvariant = "patched"\n[[expect]]\nname = "x"\n'
            f"left = {json.dumps(left)}\nop = {json.dumps(op)}\nright = {json.dumps(right)}\n"
            + (f"factor = {factor}\n" if factor is not None else ""))
    return parse_spec(text, "one.toml")


@pytest.mark.parametrize("op,right,passed", [
    ("==", 1000, True), ("!=", 1000, False), ("<", 1001, True), ("<", 1000, False),
    ("<=", 1000, True), (">", 999, True), (">", 1000, False), (">=", 1000, True), (">=", 1001, False)])
def test_ops(vanilla, patched, op, right, passed):
    out = evaluate(_one("p.guest.sigsegv", op, right), {"v": vanilla, "p": patched})[0]
    assert out["passed"] is passed and out["left_value"] == 1000


def test_factor_multiplies_right(vanilla, patched):
    cv, cp = vanilla["guest"]["cycles_per_iteration"], patched["guest"]["cycles_per_iteration"]
    ok = evaluate(_one("p.cycles_per_iteration", "<=", "v.cycles_per_iteration", 0.9),
                  {"v": vanilla, "p": patched})[0]
    assert ok["passed"] and ok["compared_with"] == pytest.approx(cv * 0.9)
    assert ok["detail"].startswith(f"{cp} <= {cv} × 0.9 = ")
    bad = evaluate(_one("p.cycles_per_iteration", "<=", "v.cycles_per_iteration", 0.5),
                   {"v": vanilla, "p": patched})[0]
    assert not bad["passed"] and f"{cp} > {cv} × 0.5" in bad["detail"]


def test_missing_value_fails(vanilla, patched):
    out = evaluate(_one("p.path.user bad area → exception search → signal.median", "<", 10**9),
                   {"v": vanilla, "p": patched})[0]
    assert not out["passed"] and out["detail"].startswith("n/a")


def test_unresolvable_metric_is_spec_error_with_line(vanilla, patched):
    spec = _one("p.hits.nosuch", "==", 0)
    with pytest.raises(SpecError) as info:
        evaluate(spec, {"v": vanilla, "p": patched})
    assert str(info.value).startswith("one.toml:7:") and "key 'left'" in str(info.value)


def test_seed_spec_on_recorded_runs(vanilla, patched, broken):
    seed = evaluate(load_spec(SEED_SPEC), {"vanilla": vanilla, "patched": patched})
    assert all(o["passed"] for o in seed), [o for o in seed if not o["passed"]]
    brk = evaluate(load_spec(BROKEN_SPEC), {"vanilla": vanilla, "broken": broken})
    failed = {o["name"] for o in brk if not o["passed"]}
    assert failed == {"broken: user faults never reach the exception search",
                      "broken: the search runs only for kernel faults (EFAULT)",
                      "broken: user-signal path costs less than vanilla's",
                      "broken: cheaper per iteration than vanilla"}


# -- output: table, json, JUnit ------------------------------------------------------

def _report(vanilla, broken):
    spec = load_spec(BROKEN_SPEC)
    return checks.check(spec, loaded={"vanilla": vanilla, "broken": broken})


def test_table_and_json(vanilla, broken):
    report = _report(vanilla, broken)
    table = checkreport.render_check(report)
    assert " ✗ broken: user faults never reach the exception search" in table
    assert " ✓ broken: every user fault still raises SIGSEGV" in table
    assert table.rstrip().endswith("4 passed, 4 failed")
    data = json.loads(checkreport.render_check(report, "json"))
    assert data["schema"] == "gdbfault.check/1" and data["failed"] == 4 and "results" not in data


def test_junit_parses_back(vanilla, broken, tmp_path):
    report = _report(vanilla, broken)
    root = ET.fromstring(checkreport.junit_xml(report))
    assert root.tag == "testsuite" and root.get("tests") == "8" and root.get("failures") == "4"
    cases = root.findall("testcase")
    assert len(cases) == 8
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 4
    msg = failures[0].find("failure").get("message")
    assert msg == "expectation 'broken: user faults never reach the exception search' failed: 300 != 0"


def test_cli_exit_codes_with_saved_runs(tmp_path, capsys):
    v, p, b = (str(DATA / f"check-{n}.json") for n in
               ("vanilla-mprotect-1000", "patched-mprotect-1000", "broken-mprotect-300"))
    junit = tmp_path / "out.xml"
    assert main(["check", str(SEED_SPEC), "--use", f"vanilla={v}", "--use", f"patched={p}",
                 "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "8 passed, 0 failed" in out and ET.parse(junit).getroot().get("failures") == "0"
    assert main(["check", str(BROKEN_SPEC), "--use", f"vanilla={v}", "--use", f"broken={b}"]) == 1
    assert "✗ broken: cheaper per iteration than vanilla" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace('op = "<="', 'op = "=<"'))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gdbfault: error: {bad}:17:") and "key 'op'" in err


# -- compare rows ---------------------------------------------------------------------

def test_compare_rows_and_table(vanilla, patched):
    cmp = build_comparison(vanilla, patched)
    rows = {r["metric"]: r for r in cmp["rows"]}
    assert rows["search_exception_table / iter"]["before"] == 1.0
    assert rows["search_exception_table / iter"]["after"] == 0.0
    assert rows["force_sig / iter"]["delta"] == 0
    med = rows["user-signal path, median insns"]
    assert (med["before"], med["after"], med["delta"]) == (347, 95, -252)
    cyc = rows["cycles / iteration"]
    assert cyc["ratio"] == pytest.approx(cyc["after"] / cyc["before"], abs=1e-4)
    # The seed's 1997 figures are data beside the measured rows, never one of them.
    assert cmp["seed"] == SEED
    assert not any(r["before"] == SEED["before"] or "seed" in r["metric"] for r in cmp["rows"])
    table = render_compare(cmp)
    assert "vanilla" in table and "patched" in table and "−252 (−72.6%)" in table
    pct = (cyc["after"] / cyc["before"] - 1) * 100
    assert (f"here: cycles/iteration {cyc['before']} → {cyc['after']}, −{abs(pct):.1f}% · "
            f"seed, 1997 (10^6 iterations, real hardware): sys 76.83 s → 57.76 s, −24.8%") in table
    # the seed's change is computed from its figures, not printed from a constant
    halved = render_compare({**cmp, "seed": {**SEED, "after": SEED["before"] / 2}})
    assert "sys 76.83 s → 38.41 s, −50.0%" in halved


def test_compare_renders_every_format(vanilla, patched):
    import csv
    import io
    cmp = build_comparison(vanilla, patched)
    as_json = json.loads(render_compare(cmp, "json"))
    assert as_json["schema"] == "gdbfault.compare/1"
    assert as_json["rows"] == cmp["rows"] and as_json["seed"] == SEED
    as_csv = list(csv.DictReader(io.StringIO(render_compare(cmp, "csv"))))
    assert [r["metric"] for r in as_csv] == [r["metric"].strip() for r in cmp["rows"]]
    search = next(r for r in as_csv if r["metric"] == "search_exception_table / iter")
    assert (float(search["before"]), float(search["after"])) == (1.0, 0.0)
    markdown = render_compare(cmp, "markdown").splitlines()
    header = next(l for l in markdown if l.startswith("|") and "vanilla" in l)
    assert [c.strip() for c in header.strip("|").split("|")] == ["", "vanilla", "patched", "change",
                                                                "ratio"]
    assert any(l.startswith("| search_exception_table / iter") and "1.00" in l and "0.00" in l
               for l in markdown)
    with pytest.raises(GdbfaultError, match="unknown format 'yaml'"):
        render_compare(cmp, "yaml")


def test_unknown_run_setting_lists_every_key_a_run_table_takes():
    msg = _error(SMALL.replace("iterations = 10", "iteratons = 10"))
    for key in ("live_patch", "patch_at", "unpatch_at", "keep_run_dir", "iterations", "backend"):
        assert key in msg.split("choose from", 1)[1], msg


def test_a_huge_factor_prints_as_a_number_not_309_digits(vanilla, patched):
    out = evaluate(_one("p.cycles_per_iteration", "<=", "v.cycles_per_iteration", 1e308),
                   {"v": vanilla, "p": patched})[0]
    assert out["passed"] and "1e+308" in out["detail"] and len(out["detail"]) < 80, out["detail"]
    assert checks._fmt(1e20) == "1e+20" and checks._fmt(1234.0) == "1234" and checks._fmt(0.5) == "0.5"
