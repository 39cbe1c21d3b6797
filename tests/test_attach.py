"""End-to-end: `gdbfault attach` with real QEMU, real GDB and the real lab kernels.

Every hit count is checked against the guest's own GDBFAULT-RESULT summary,
and every failure mode against a one-line error, a non-zero exit, the counts
saved so far, and no QEMU or GDB process left behind.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from conftest import tagged_processes
from gdbfault.model.paths import KERNEL_FIXUP, RESOLVED_SHAPE, USER_SEARCH_SIGNAL, USER_SIGNAL
from gdbfault.model.result import as_result
from gdbfault.runs.booted import run_qemu
from gdbfault.model.spec import RunSpec

pytestmark = pytest.mark.qemu

ITER = {"mprotect": 150, "demand": 60, "efault": 150, "mixed": 60}


def hits(result, role):
    """A probe's workload hits in a RunResult or a saved run's JSON."""
    return as_result(result).probe(role).hits.workload


def paths(result):
    return {p.shape: p for p in as_result(result).paths or []}


@pytest.mark.parametrize("variant", ["vanilla", "patched"])
@pytest.mark.parametrize("workload", ["mprotect", "demand", "efault", "mixed"])
def test_counts_equal_the_guests_own_truth(lab_built, no_leaks, variant, workload):
    res = run_qemu(RunSpec(variant=variant, workload=workload, iterations=ITER[workload]))
    g = res.guest
    assert g["errors"] == 0 and g["iterations"] == ITER[workload]
    sigsegv, efault, pages = g["sigsegv"], g["efault"], g["demand_pages"]
    assert hits(res, "signal forced") == sigsegv
    assert hits(res, "exception search") == (sigsegv + efault if variant == "vanilla" else efault)
    assert hits(res, "fault resolved") == sigsegv + pages
    assert hits(res, "fault entry") == 2 * sigsegv + efault + pages
    assert res.checks and res.checks_ok
    # every fault is traced to its return and named
    p = paths(res)
    assert sum(r.count for r in p.values()) == hits(res, "fault entry")
    signal_shape = USER_SEARCH_SIGNAL if variant == "vanilla" else USER_SIGNAL
    count = lambda shape: p[shape].count if shape in p else 0
    assert count(signal_shape) == sigsegv
    assert count(KERNEL_FIXUP) == efault
    assert count(RESOLVED_SHAPE) == sigsegv + pages
    assert res.run.complete and res.run.exit_status == 0


def run_cli(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "gdbfault", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_table_json_csv_and_report_rerender(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    r = run_cli("attach", "--qemu", "--iterations", "100", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "search_exception_table" in r.stdout and "match the guest's own summary ✓" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["schema"] == "gdbfault.run/1" and saved["guest"]["sigsegv"] == 100
    again = run_cli("report", str(out))
    assert again.returncode == 0 and "force_sig" in again.stdout
    csv_out = run_cli("report", str(out), "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("kernel,variant,workload")


def one_line_error(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("gdbfault: error:"), r.stderr
    for n in needles:
        assert n in lines[-1], lines[-1]


def test_missing_kernel_file(no_leaks, tmp_path):
    r = run_cli("attach", "--qemu", "--kernel", str(tmp_path / "nope.elf"))
    assert r.returncode == 2
    one_line_error(r, "kernel file not found", "nope.elf")


def test_unknown_symbol(lab_built, no_leaks):
    r = run_cli("attach", "--qemu", "--probe", "x=no_such_function")
    assert r.returncode == 2
    one_line_error(r, "'no_such_function' not found in System.map", "vanilla")


def test_unknown_workload(no_leaks):
    r = run_cli("attach", "--qemu", "--workload", "nope")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "unknown workload 'nope'" in err[0]


def test_nothing_listening_on_port(lab_built, no_leaks):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("attach", "--port", str(port), "--duration", "1")
    assert r.returncode == 2
    one_line_error(r, f"nothing is listening on 127.0.0.1:{port}")


def test_guest_oops_is_reported_and_counts_saved(lab_built, no_leaks, tmp_path):
    # --live: counted in the guest itself (a recording that oopses is not replayed, test_faults.py)
    out = tmp_path / "run.json"
    r = run_cli("attach", "--qemu", "--live", "--append", "labtest=oops", "--output", str(out))
    assert r.returncode == 3
    one_line_error(r, "oops", str(out))
    saved = json.loads(out.read_text())
    assert saved["run"]["complete"] is False and saved["run"]["exit_status"] == 29
    # the oops is a kernel-mode fault: the entry probe saw it
    assert hits(saved, "fault entry") >= 1


def test_guest_hang_times_out(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    r = run_cli("attach", "--qemu", "--append", "labtest=hang", "--timeout", "8", "--output", str(out))
    assert r.returncode == 3
    one_line_error(r, "did not finish within --timeout 8 s")
    assert json.loads(out.read_text())["run"]["error"]


def _replaying(tag, name):
    """The process `name` of the replay phase (the one GDB is attached to)."""
    for p in tagged_processes(tag):
        try:
            mark = "rr=replay" if name == "qemu-system-i386" else "--interpreter=mi3"
            if p.name() == name and any(mark in a for a in p.cmdline()):
                return p
        except psutil.NoSuchProcess:
            pass
    return None


def _kill_mid_run(name, tmp_path, tag):
    out = tmp_path / "run.json"
    env = dict(os.environ, GDBFAULT_TEST_TAG=tag)
    proc = subprocess.Popen([sys.executable, "-m", "gdbfault", "attach", "--qemu", "--iterations", "100000",
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        victim = _replaying(tag, name)
        time.sleep(0.2)
    assert victim is not None, f"no {name} process appeared"
    time.sleep(4)            # let it count for a while
    try:
        victim.kill()
    except psutil.NoSuchProcess:
        pass
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr, out


def test_qemu_killed_mid_run(lab_built, no_leaks, tmp_path):
    code, stderr, out = _kill_mid_run("qemu-system-i386", tmp_path, no_leaks)
    assert code == 3, stderr
    assert "QEMU was killed" in stderr.strip().splitlines()[-1]
    saved = json.loads(out.read_text())
    assert saved["run"]["hits"] > 0, "counts measured before the kill were lost"


def test_gdb_killed_mid_run(lab_built, no_leaks, tmp_path):
    code, stderr, out = _kill_mid_run("gdb", tmp_path, no_leaks)
    assert code == 2, stderr
    assert "GDB died" in stderr.strip().splitlines()[-1]
    saved = json.loads(out.read_text())
    assert saved["run"]["hits"] > 0, "the last snapshot before GDB died was lost"


def test_nothing_listens_on_the_network_and_ctrl_c_cleans_up(lab_built, no_leaks, tmp_path):
    """QEMU's gdbstub and QMP are unix sockets only; Ctrl-C saves and tears down."""
    out = tmp_path / "run.json"
    proc = subprocess.Popen([sys.executable, "-m", "gdbfault", "attach", "--qemu", "--iterations", "100000",
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        qemu = None
        deadline = time.monotonic() + 60
        while qemu is None and time.monotonic() < deadline:
            qemu = _replaying(no_leaks, "qemu-system-i386")
            time.sleep(0.2)
        assert qemu is not None
        time.sleep(1)
        inet = [c for c in qemu.net_connections(kind="inet")]
        assert inet == [], f"QEMU has inet sockets: {inet}"
        unix = [c.laddr for c in qemu.net_connections(kind="unix") if c.laddr]
        assert any(path.endswith("/gdb.sock") for path in unix), unix
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        one_line_error(SimpleNamespace(stderr=stderr), "stopped by SIGINT (Ctrl-C)")
        assert json.loads(out.read_text())["run"]["hits"] > 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_attach_to_a_running_qemu_by_pid_then_detach(lab_built, no_leaks, tmp_path):
    """Count on a QEMU we did not start, then leave it running to its normal end."""
    from gdbfault.base.locations import lab_kernel, workload_binary
    from gdbfault.machine.qemu import Machine, MachineConfig
    kernel, _ = lab_kernel("vanilla")
    with Machine(MachineConfig(kernel=kernel, initrd=[workload_binary("mprotect")],
                               append="iterations=1000000", halted=False, icount=False)) as m:
        m.start()
        out = tmp_path / "run.json"
        r = run_cli("attach", "--pid", str(m.pid), "--kernel", str(kernel), "--duration", "3",
                    "--format", "json", "-o", str(out))
        assert r.returncode == 0, r.stderr
        res = json.loads(out.read_text())
        assert res["workload"]["attached_to"] == str(m.gdb_socket)
        sig, entry = hits(res, "signal forced"), hits(res, "fault entry")
        # two faults per iteration; the window may cut an iteration at each end
        assert sig > 0 and abs(entry - 2 * sig) <= 2
        # detached: the guest goes on to finish its workload by itself
        assert m.wait(120) == 0
        from gdbfault.model.truth import parse_guest_output
        assert parse_guest_output(m.serial_output())["result"]["sigsegv"] == 1000000
