"""`gdbfault inspect`: a run's kept recording opened at one fault, end to end with real QEMU and GDB.

One short run per kernel (kept beside its --output), several checks on each:
the lab kernel's slowest resolved fault is iteration 1's demand-zero fault
(8443 instructions, do_anonymous_page and the page clear in its call tree),
the 10th user-signal fault is iteration 10's (347 vanilla, 95 patched),
reverse-stepi from a fault's entry lands in the entry stub and reverse-continue
goes back to the previous fault's entry — the same on the old-kernel fixture
(GRUB boot, System.map only, snapshot replay); a live-patched run shows the
replacement code in a later fault's tree; bad input is one line, exit 2, and
nothing is left running.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gdbfault.kernels.grub import grub_available
from gdbfault.machine.plugins import PluginUnavailable, plugin_library

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "qemu" / "kernel" / "build"
ITERATIONS = 12


def _tree_plugin():
    try:
        plugin_library("kprofile")
        return True
    except PluginUnavailable:
        return False


needs_tree = pytest.mark.skipif(not _tree_plugin(), reason="the kernel-profile plugin is not built")


def cli(*args, timeout=300, stdin=None, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "gdbfault", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, input=stdin, cwd=cwd, env=env)


def attach(folder, name, *args):
    """A run saved as FOLDER/NAME.json, given as a relative --output (as `make demo` does)."""
    r = cli("attach", "--qemu", "--iterations", ITERATIONS, "-q", "--output", f"{name}.json", *args, cwd=folder)
    assert r.returncode == 0, r.stderr
    return Path(folder) / f"{name}.json", r.stdout


def inspect(run, *args):
    r = cli("inspect", run, "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def vanilla(lab_built, tmp_path_factory):
    return attach(tmp_path_factory.mktemp("vanilla"), "run")


@needs_tree
def test_slowest_resolved_fault_is_the_first_iterations_demand_zero_fault(vanilla, no_leaks):
    run, report = vanilla
    data = json.loads(run.read_text())
    rec = data["recording"]
    kept = run.parent / rec["dir"]
    assert kept.name == "run.json.rr" and (kept / "recording.json").is_file() and rec["size_bytes"] > 0
    # the report's last lines: where the recording is and how to open a fault; the outlier explained
    assert "recording kept: run.json.rr/" in report and "gdbfault inspect run.json --path resolved --max" in report
    slowest = next(line for line in report.splitlines() if "slowest resolved" in line)
    assert "8,443 at iteration 1 (fault 2)" in slowest and "do_anonymous_page" in slowest and "memset" in slowest
    got = inspect(run, "--path", "resolved", "--max")
    fault = got["fault"]
    assert (fault["index"], fault["iteration"], fault["cost"]) == (2, 1, 8443)
    assert (fault["mode"], fault["write"], fault["present"], fault["error_code"]) == ("user", True, False, 6)
    assert fault["eip_symbol"].startswith("mprotect_cycle") and fault["cr2"] == 0x40000000
    assert got["backtrace"][:2] == ["do_page_fault", "page_fault+0x2a"]
    calls = {c["symbol"]: c for c in got["calls"]}
    assert calls["do_page_fault"]["instructions"] == 8443 and calls["do_page_fault"]["depth"] == 0
    assert "do_anonymous_page" in calls and calls["memset"]["own"] > 4000          # the page clear
    assert got["deepest"][-1] == "memset" and "do_anonymous_page" in got["deepest"]
    assert sum(c["own"] for c in got["calls"]) == 8443


def test_tenth_user_signal_fault_and_reverse_execution(vanilla, no_leaks):
    run, _ = vanilla
    got = inspect(run, "--path", "user-signal", "--nth", "10", "--no-tree", "--ex", "reverse-stepi",
                  "--ex", "x/i $pc", "--ex", "reverse-continue", "--ex", "x/i $pc")
    fault = got["fault"]
    assert (fault["iteration"], fault["cost"], fault["shape"]) == (10, 347, "user bad area → exception search → signal")
    stepped, at_stub, back, at_entry = got["ex"]
    assert stepped["from_entry"] == -1 and "page_fault" in stepped["output"]
    assert "<page_fault+" in at_stub["output"] and "call" in at_stub["output"]
    # back to the previous fault's entry (iteration 9's resolved fault)
    previous = inspect(run, "--fault", fault["index"] - 1, "--no-tree")["fault"]
    assert back["icount"] == previous["icount"] and "<do_page_fault>" in at_entry["output"]
    # --iteration names the same fault; --gdb takes commands on stdin at a prompt there
    assert inspect(run, "--iteration", "10", "--no-tree")["fault"]["index"] == fault["index"]
    r = cli("inspect", run, "--iteration", "10", "--no-tree", "--gdb", stdin="info registers eip\nquit\n")
    assert r.returncode == 0 and "do_page_fault" in r.stdout, r.stderr


def test_bad_input_is_one_line_and_leaves_nothing_running(vanilla, tmp_path, no_leaks):
    run, _ = vanilla
    for args, words in ((["--fault", "999"], "out of range"), (["--path", "nosuch"], "its paths are"),
                        (["--iteration", "99"], "out of range"), ([], "say which fault")):
        r = cli("inspect", run, *args)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a kernel rebuilt since: the kept copy changed under the recording
    copy = tmp_path / "copy.json"
    shutil.copy(run, copy)
    shutil.copytree(run.parent / "run.json.rr", tmp_path / "run.json.rr")
    data = json.loads(copy.read_text())
    data["recording"]["dir"] = "run.json.rr"
    copy.write_text(json.dumps(data))
    shutil.copy(BUILD / "patched" / "kernel.elf", tmp_path / "run.json.rr" / "kernel.elf")
    r = cli("inspect", copy, "--fault", "1")
    assert r.returncode == 2 and "kernel.elf changed since the recording" in r.stderr, r.stderr
    # a run with no recording
    del data["recording"]
    copy.write_text(json.dumps(data))
    r = cli("inspect", copy, "--fault", "1")
    assert r.returncode == 2 and "no kept recording" in r.stderr


def test_patched_tenth_user_signal_fault_costs_95(lab_built, tmp_path, no_leaks):
    run, _ = attach(tmp_path, "patched", "--variant", "patched")
    fault = inspect(run, "--path", "user-signal", "--nth", "10", "--no-tree")["fault"]
    assert (fault["iteration"], fault["cost"], fault["shape"]) == (10, 95, "user bad area → signal")


@needs_tree
def test_a_fault_after_a_live_patch_runs_the_replacement(lab_built, tmp_path, no_leaks):
    patch = REPO / "qemu" / "kernel" / "patches" / "0001-user-faults-skip-exception-table.patch"
    run, _ = attach(tmp_path, "live", "--live-patch", patch, "--patch-at", "6")
    got = inspect(run, "--iteration", "9", "--path", "user-signal")
    assert got["fault"]["cost"] == 96          # the patched path (95) and the jmp at the old entry
    symbols = [c["symbol"] for c in got["calls"]]
    assert "do_page_fault.livepatch" in symbols and "search_exception_table" not in symbols
    before = inspect(run, "--iteration", "3", "--path", "user-signal")
    assert "search_exception_table" in [c["symbol"] for c in before["calls"]]


def test_plugin_run_has_no_recording_to_open(lab_built, tmp_path, no_leaks):
    try:
        plugin_library("faultcount")
    except PluginUnavailable:
        pytest.skip("the counting plugin is not built")
    run, _ = attach(tmp_path, "plugin", "--backend", "plugin")
    r = cli("inspect", run, "--fault", "1")
    assert r.returncode == 2 and "unrecorded" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not grub_available(), reason="GRUB i386-pc files are not installed")
def test_old_kernel_fixture_opens_a_fault_and_runs_backwards(lab_built, tmp_path, no_leaks):
    folder = BUILD / "oldboot"
    run, report = attach(tmp_path, "old", "--kernel", folder / "bzImage", "--system-map", folder / "System.map")
    assert "gdbfault inspect old.json" in report
    got = inspect(run, "--path", "resolved", "--max", "--ex", "reverse-stepi", "--ex", "reverse-continue",
                  "--ex", "x/i $pc", *([] if _tree_plugin() else ["--no-tree"]))
    fault = got["fault"]
    assert (fault["index"], fault["iteration"], fault["cost"]) == (2, 1, 8443)
    assert fault["eip_symbol"].startswith("mprotect_cycle")        # the workload's names, from its ELF
    stepped, back, at_entry = got["ex"]
    assert stepped["from_entry"] == -1 and "page_fault" in stepped["output"]     # names from the System.map
    first = inspect(run, "--fault", "1", "--no-tree")["fault"]
    assert back["icount"] == first["icount"] and "<do_page_fault>" in at_entry["output"]
    if _tree_plugin():
        assert "do_anonymous_page" in [c["symbol"] for c in got["calls"]]


def test_an_x86_64_kernel_opens_with_64_bit_registers(debian_amd64_kernel, tmp_path, no_leaks):
    """Debian's amd64 6.1 kernel (System.map only, PVH boot): the fault entry takes (regs, error_code)
    in rdi, rsi; names from the map; reverse-stepi lands in the IDT stub that called exc_page_fault."""
    vmlinuz, system_map = debian_amd64_kernel
    run, report = attach(tmp_path, "amd64", "--kernel", vmlinuz, "--system-map", system_map)
    assert "slowest user bad area → signal" in report            # the first iteration's, explained
    got = inspect(run, "--path", "user-signal", "--nth", "3", "--no-tree", "--ex", "reverse-stepi")
    fault = got["fault"]
    assert got["arch"] == "x86_64" and fault["pt_regs"] == "x86_64" and fault["mode"] == "user"
    assert fault["eip_symbol"].startswith("mprotect_cycle") and 0 < fault["cr2"] < 1 << 32   # an IA32 process
    assert got["backtrace"][0] == "exc_page_fault" and got["backtrace"][1].startswith("asm_exc_page_fault")
    assert "asm_exc_page_fault" in got["ex"][0]["output"] and got["ex"][0]["from_entry"] == -1
