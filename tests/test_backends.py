"""The plugin backend through `gdbfault attach`: same truth, same report, GDB as cross-check."""
import dataclasses

import pytest

import gdbfault.machine.plugins as plugin_backend
from gdbfault.analysis.crosscheck import cross_check
from gdbfault.base.errors import RunFailed
from gdbfault.runs.booted import run_qemu
from gdbfault.model.spec import RunSpec

pytestmark = pytest.mark.qemu


def _plugin_or_skip():
    try:
        plugin_backend.plugin_library()
    except plugin_backend.PluginUnavailable as exc:
        pytest.skip(f"plugin backend not built here: {exc}")


@pytest.mark.parametrize("variant", ["vanilla", "patched"])
def test_plugin_counts_equal_the_guest_and_the_gdb_backend(lab_built, no_leaks, variant):
    _plugin_or_skip()
    spec = RunSpec(variant=variant, workload="mixed", iterations=120, backend="plugin")
    res = run_qemu(spec)
    assert res.mode.backend == "plugin"
    assert res.checks and res.checks_ok, res.checks
    gdb = run_qemu(dataclasses.replace(spec, backend="gdb"))
    verdict = cross_check(res, gdb)
    assert verdict.agree, verdict.differences


def test_plugin_runs_are_deterministic(lab_built, no_leaks):
    _plugin_or_skip()
    spec = RunSpec(workload="mprotect", iterations=500, backend="plugin")
    a, b = run_qemu(spec), run_qemu(spec)
    assert [(p.shape, p.cost_hist) for p in a.paths] == [(p.shape, p.cost_hist) for p in b.paths]
    assert a.guest["cycles"] == b.guest["cycles"]


def test_cross_check_reports_a_difference():
    from gdbfault.model.result import Hits, Kernel, Mode, Probe, RunResult, RunStatus, Tool, Workload

    def run(hits, cost):
        return RunResult(tool=Tool(), kernel=Kernel("k"), workload=Workload(), mode=Mode(),
                         probes=[Probe("signal forced", "force_sig", 0xC0100000, hits=Hits(0, hits))],
                         paths=[{"shape": "user bad area → signal", "count": 10, "cost_hist": {str(cost): 10},
                                 "median": cost}],
                         run=RunStatus(duplicates=0, wall_s=1.0))
    v = cross_check(run(10, 99), run(11, 98))
    assert not v.agree and len(v.differences) == 2
    assert v.differences[0] == "signal forced (force_sig): plugin 10, gdb 11"
    assert cross_check(run(10, 99), run(10, 99)).agree


def test_missing_plugin_is_a_clear_error_and_gdb_still_works(lab_built, no_leaks, tmp_path, monkeypatch):
    monkeypatch.setattr(plugin_backend, "PLUGIN_DIR", tmp_path)
    with pytest.raises(RunFailed) as err:
        run_qemu(RunSpec(iterations=20, backend="plugin"))
    assert isinstance(err.value.cause, plugin_backend.PluginUnavailable)
    assert "make -C qemu/plugin" in str(err.value)
    res = run_qemu(RunSpec(iterations=20))
    assert res.checks and res.checks_ok
