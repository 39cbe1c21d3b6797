"""Fault paths and their cost: shapes, determinism, observer effect, an independent check.

End-to-end tests use real QEMU, GDB and the lab kernels.
"""
import json
import subprocess
import sys

import pytest

from conftest import gdb_on_lab

from gdbfault.base.locations import lab_kernel, workload_binary
from gdbfault.model.paths import (KERNEL_FIXUP, RESOLVED_SHAPE, USER_SEARCH_SIGNAL, USER_SIGNAL, classify,
                            cost_stats, summarise_paths)
from gdbfault.machine.qemu import Machine, MachineConfig
from gdbfault.runs.booted import run_qemu
from gdbfault.model.spec import RunSpec
from gdbfault.model.truth import parse_guest_output


# -- units ---------------------------------------------------------------------

def test_shapes_are_named_and_unknown_ones_kept():
    assert classify(["exception search", "signal forced"]) == USER_SEARCH_SIGNAL
    assert classify(["signal forced"]) == USER_SIGNAL
    assert classify(["exception search"]) == KERNEL_FIXUP
    assert classify(["fault resolved"]) == RESOLVED_SHAPE
    assert classify(["exception search", "exception search", "signal forced"]).startswith("other: ")
    assert classify(["exception search"], returned=False).startswith("never returned")


def test_cost_stats():
    assert cost_stats([]) == {"min": None, "median": None, "p95": None, "max": None}
    s = cost_stats(list(range(1, 101)))
    assert (s["min"], s["median"], s["p95"], s["max"]) == (1, 50.5, 95, 100)


def test_summarise_merges_backends_forms():
    trace = {"paths": [{"phase": "workload", "events": ["signal forced"], "count": 2, "costs": [10, 12]},
                       {"phase": "workload", "events": ["signal forced"], "cost_hist": {"10": 3}},
                       {"phase": "boot", "events": ["fault resolved"], "count": 5, "costs": []}],
             "open": [{"phase": "workload", "events": ["exception search"]}]}
    rows = {r["shape"]: r for r in summarise_paths(trace)}
    assert rows[USER_SIGNAL]["count"] == 5 and rows[USER_SIGNAL]["cost_hist"] == {"10": 4, "12": 1}
    assert RESOLVED_SHAPE not in rows           # boot phase is reported apart
    assert any(s.startswith("never returned") for s in rows)


# -- end to end ------------------------------------------------------------------



def _paths(res):
    return {p.shape: p for p in res.paths}


@pytest.mark.qemu
def test_two_runs_give_identical_costs(lab_built, no_leaks):
    a = run_qemu(RunSpec(variant="vanilla", workload="mixed", iterations=80))
    b = run_qemu(RunSpec(variant="vanilla", workload="mixed", iterations=80))
    assert [(p.shape, p.cost_hist) for p in a.paths] == [(p.shape, p.cost_hist) for p in b.paths]
    assert a.guest["cycles"] == b.guest["cycles"]


def _unobserved_guest(variant, workload, iterations):
    """The workload's own summary from a run with no debugger at all."""
    kernel, _ = lab_kernel(variant)
    with Machine(MachineConfig(kernel=kernel, initrd=[workload_binary(workload)],
                               append=f"iterations={iterations}", halted=False)) as m:
        m.start()
        assert m.wait(120) == 0
        return parse_guest_output(m.serial_output())["result"]


@pytest.mark.qemu
@pytest.mark.parametrize("variant", ["vanilla", "patched"])
def test_no_observer_effect_on_the_guests_own_cycles(lab_built, no_leaks, variant):
    plain = _unobserved_guest(variant, "mprotect", 300)
    res = run_qemu(RunSpec(variant=variant, workload="mprotect", iterations=300))
    assert res.guest["cycles"] == plain["cycles"]
    assert res.guest["cycles_per_iteration"] == plain["cycles_per_iteration"]
    # The tracer's own iteration cost (signal fault to signal fault) agrees with
    # the guest's rdtsc average, which also carries timer ticks and progress lines.
    it = res.trace.iteration
    assert it.min <= plain["cycles_per_iteration"] <= it.max
    assert it.median == pytest.approx(plain["cycles_per_iteration"], rel=0.1)


def _single_step_cost(variant):
    """Instructions from do_page_fault's first hit to its return, by single-stepping."""
    script = r'''
import gdb
gdb.execute("break do_page_fault", to_string=True)
gdb.execute("continue", to_string=True)
esp = int(gdb.parse_and_eval("$esp"))
ret = int.from_bytes(bytes(gdb.selected_inferior().read_memory(esp, 4)), "little")
gdb.execute("delete", to_string=True)
n = 0
while int(gdb.parse_and_eval("$pc")) != ret or int(gdb.parse_and_eval("$esp")) != esp + 4:
    gdb.execute("stepi", to_string=True)
    n += 1
print("STEPPED", n)
'''
    out, _ = gdb_on_lab(script, variant, iterations=5)
    line = next(l for l in out.splitlines() if l.startswith("STEPPED"))
    return int(line.split()[1])


@pytest.mark.qemu
@pytest.mark.parametrize("variant", ["vanilla", "patched"])
def test_path_cost_matches_single_stepping(lab_built, no_leaks, variant):
    stepped = _single_step_cost(variant)
    res = run_qemu(RunSpec(variant=variant, workload="mprotect", iterations=5))
    shape = USER_SEARCH_SIGNAL if variant == "vanilla" else USER_SIGNAL
    assert _paths(res)[shape].min == stepped


@pytest.mark.qemu
def test_patch_shortens_the_user_signal_path(lab_built, no_leaks):
    van = run_qemu(RunSpec(variant="vanilla", workload="mprotect", iterations=100))
    pat = run_qemu(RunSpec(variant="patched", workload="mprotect", iterations=100))
    v, p = _paths(van)[USER_SEARCH_SIGNAL].median, _paths(pat)[USER_SIGNAL].median
    assert p < v
    assert pat.guest["cycles_per_iteration"] < van.guest["cycles_per_iteration"]
    # the resolved path is untouched by the patch
    assert _paths(van)[RESOLVED_SHAPE].median == _paths(pat)[RESOLVED_SHAPE].median


@pytest.mark.qemu
def test_cost_sampling_keeps_counts_exact(lab_built, no_leaks, tmp_path):
    plot = tmp_path / "paths.png"
    out = tmp_path / "run.json"
    r = subprocess.run([sys.executable, "-m", "gdbfault", "attach", "--qemu", "--workload", "mixed",
                        "--iterations", "60", "--cost-sample", "4", "--plot", str(plot), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert all(c["ok"] for c in res["checks"])
    total = sum(p["count"] for p in res["paths"])
    costed = sum(p["costed"] for p in res["paths"])
    assert total == res["trace"]["entries"] and costed == -(-total // 4)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_modern_linux_user_fault_step_does_not_change_the_shape():
    assert classify(["user fault", "signal forced"]) == USER_SIGNAL
    assert classify(["user fault", "fault resolved"]) == RESOLVED_SHAPE


def test_histogram_stats_equal_list_stats():
    import random
    rng = random.Random(7)
    costs = [rng.choice([99, 347, 350, 421, 8439]) for _ in range(501)]
    hist = {}
    for c in costs:
        hist[str(c)] = hist.get(str(c), 0) + 1
    from gdbfault.model.paths import hist_stats
    assert hist_stats(hist) == cost_stats(costs)
    assert hist_stats({"5": 1, "7": 1}) == cost_stats([5, 7])
