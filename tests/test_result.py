"""Unit tests for the RunResult type (gdbfault/model/result.py): no kernel is booted.

The recorded run files in tests/data are real runs' JSON (a GDB run cut off by
--timeout, a live patch with unpatch and timeline, a plugin live patch, a
plugin run cross-checked with GDB, and older runs of `gdbfault check`).
"""
import json
from pathlib import Path

import pytest

from gdbfault.base.errors import GdbfaultError
from gdbfault.model.result import (SCHEMA, Check, Hits, Kernel, LivePatch, Mode, PathRow, Probe, RunResult,
                             RunStatus, Tool, Workload, as_result)

DATA = Path(__file__).resolve().parent / "data"
RUN_FILES = sorted(DATA.glob("run-*.json")) + sorted(DATA.glob("check-*-mprotect-*.json"))


def fresh(**kw):
    return RunResult(tool=Tool("0.1.0", "7.2.22", "13.1"),
                     kernel=Kernel("/k/kernel.elf", lab=True, variant="vanilla", model="lab-vanilla"),
                     workload=Workload("mprotect", iterations=10, command_line="iterations=10"),
                     mode=Mode(), probes=[Probe("fault entry", "do_page_fault", 0xC0101000),
                                          Probe("signal forced", "force_sig", 0xC0102000)], **kw)


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_recorded_runs_read_and_write_back_key_for_key(path):
    text = path.read_text()
    data = json.loads(text)
    result = RunResult.from_dict(data, path)
    assert isinstance(result.kernel, Kernel) and isinstance(result.run, RunStatus)
    assert all(isinstance(p, Probe) and isinstance(p.hits, Hits) for p in result.probes)
    assert all(isinstance(c, Check) for c in result.checks)
    assert all(isinstance(p, PathRow) for p in result.paths or [])
    # the same keys in the same order, and the same values
    assert json.dumps(result.to_dict(), indent=1) + "\n" == json.dumps(data, indent=1) + "\n"


def test_typed_fields_of_a_live_patched_run():
    result = RunResult.from_dict(json.loads((DATA / "run-gdb-livepatch-unpatch-40.json").read_text()))
    lp = result.live_patch
    assert isinstance(lp, LivePatch) and lp.applied and lp.at_iteration == 20
    assert [name for name, _ in lp.phases()] == ["before", "after", "after_unpatch"]
    search = result.probe("exception search")
    assert sum(ph.hits[search.symbol] for _, ph in lp.phases()) == search.hits.workload
    assert lp.after.per_iteration["search_exception_table"] == 0.0
    assert lp.before.per_iteration["search_exception_table"] == 1.0
    assert {c.phase for c in result.checks} == {"total", "before", "after", "after_unpatch"}
    assert [c.role for c in result.whole_run_checks()] == [c.role for c in result.checks
                                                           if c.phase == "total"]
    assert result.checks_ok and result.record.live_patch["patch"]["applied"]


def test_iterations_come_from_the_guest_else_from_the_request():
    r = fresh()
    assert r.iterations == 10                              # nothing reported: the request
    r.guest = {"iterations": 12, "sigsegv": 12}
    assert r.iterations == 12                              # the guest's own count wins
    r.workload.iterations = None
    r.guest = None
    assert r.iterations is None


def test_probe_lookup_and_checks():
    r = fresh()
    assert r.probe("signal forced").symbol == "force_sig"
    assert r.probe("force_sig") is None and r.find_probe("force_sig").role == "signal forced"
    assert r.checks_ok                                      # no checks: nothing failed
    r.checks = [{"role": "signal forced", "symbol": "force_sig", "expected": 10, "counted": 9,
                 "ok": False}]
    assert isinstance(r.checks[0], Check)                   # dicts assigned become parts
    assert not r.checks_ok and r.failed_checks[0].counted == 9


def test_a_fresh_result_writes_optional_keys_only_once_set():
    r = fresh()
    d = r.to_dict()
    assert list(d) == ["schema", "tool", "kernel", "workload", "mode", "probes", "guest", "checks", "run"]
    assert d["schema"] == SCHEMA and d["guest"] is None and d["checks"] == []
    assert "per_iteration" not in d["probes"][0] and "phase" not in d["run"]
    r.probes[0].per_iteration = None                        # set to None: written as null
    r.run.phase = "record"
    r.run.stopped_by_gdbfault = True                        # bookkeeping: never written
    d = r.to_dict()
    assert d["probes"][0]["per_iteration"] is None and d["run"]["phase"] == "record"
    assert "stopped_by_gdbfault" not in d["run"]
    assert RunResult.from_dict(json.loads(json.dumps(d))) == r


def test_unknown_keys_are_kept():
    d = fresh().to_dict()
    d["future"] = {"x": 1}
    d["probes"][0]["colour"] = "red"
    back = RunResult.from_dict(d).to_dict()
    assert back["future"] == {"x": 1} and back["probes"][0]["colour"] == "red"


@pytest.mark.parametrize("bad, message", [
    ({}, "no gdbfault.run schema"),
    ([1, 2], "no gdbfault.run schema"),
    ({"schema": "gdbfault.compare/1"}, "no gdbfault.run schema"),
    ({"schema": SCHEMA, "tool": {}, "kernel": {}, "workload": {}, "mode": {}, "probes": {}, "run": {}},
     "'probes' is not a list"),
    ({"schema": SCHEMA, "tool": {}, "kernel": {"path": "k"}, "workload": {}, "mode": {},
      "probes": [{"role": "r", "symbol": "s"}], "run": {}}, "run is not a complete .*: probes\\[0\\] has no 'address'"),
    ({"schema": SCHEMA, "tool": {}, "kernel": {}, "workload": {}, "mode": {}, "probes": [],
      "run": {}}, "run is not a complete .*: kernel has no 'path'"),
    ({"schema": SCHEMA, "tool": {}, "kernel": {"path": "k"}, "workload": {}, "mode": {},
      "probes": [{"role": "r", "symbol": "s", "address": 1, "hits": 3}], "run": {}},
     "probes\\[0\\].hits is not an object but int"),
])
def test_a_bad_run_is_refused_in_one_line(bad, message):
    with pytest.raises(GdbfaultError, match=message) as err:
        RunResult.from_dict(bad)
    assert "\n" not in str(err.value)


def test_as_result_takes_a_dict_or_a_result():
    r = fresh()
    assert as_result(r) is r
    assert as_result(r.to_dict()) == r
    with pytest.raises(TypeError):
        as_result("run.json")


