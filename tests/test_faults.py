"""The fault matrix (README): every signal, dying part and bad input ends cleanly.

Signals are real: a real `python3 -m gdbfault` subprocess boots the real lab
kernel under real QEMU and GDB, gets a real signal (or has a real part
killed), and then the saved JSON, every process it started and its private
TMPDIR are checked. Each test here is a row of the README's fault matrix.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, temp_entries
from gdbfault.machine.config import RECORD_LOG

PART_NAMES = ("qemu-system-i386", "gdb")


class Gdbfault:
    """One `python3 -m gdbfault ...` subprocess with a private TMPDIR, watched."""

    def __init__(self, tmp_path, *args, tmpdir=None):
        # A short private TMPDIR: a long one (pytest's) would move run dirs to
        # the /tmp fallback (unix socket paths are limited to 107 bytes).
        self.tmp = Path(tmpdir) if tmpdir else Path(tempfile.mkdtemp(prefix="gf-test-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        LIVE.append(self)
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONPATH=str(REPO))
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "gdbfault", *map(str, args)], env=env,
                                     cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.seen = {}                   # pid -> psutil.Process of every QEMU/GDB it started
        self.names = {}                  # pid -> its name
        self.roles = {}                  # pid -> "record", "replay", "gdb", "qemu" (not --version)

    def parts(self):
        """Names of the live QEMU/GDB processes under gdbfault (and remember them)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        names = []
        for c in children:
            try:
                if c.name() in PART_NAMES and c.status() != psutil.STATUS_ZOMBIE:
                    self.seen.setdefault(c.pid, c)
                    self.names.setdefault(c.pid, c.name())
                    if "--version" not in c.cmdline():       # (gdbfault asks both their versions)
                        self.roles.setdefault(c.pid, _role(c.cmdline()))
                        names.append(c.name())
            except psutil.Error:
                pass
        return names

    def wait_for(self, predicate, timeout=120, then=0.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.parts()):
                time.sleep(then)
                self.parts()
                return
            if self.proc.poll() is not None:
                pytest.fail(f"gdbfault ended before the moment came: {self.proc.stderr.read()[-500:]}")
            time.sleep(0.05)
        pytest.fail("the moment never came")

    def live(self, name):
        """A running QEMU or GDB under gdbfault (not a short `--version` one)."""
        self.parts()
        found = [p for pid, p in self.seen.items() if self.names[pid] == name and _running(p)
                 and pid in self.roles]
        assert found, f"no running {name}"
        return found[-1]

    def wait_for_serial(self, text, timeout=120, then=0.0):
        """Until the replay's (or live run's) serial console shows `text`."""
        def shown(_):
            return any(text in log.read_text(errors="replace")
                       for log in self.tmp.glob("gdbfault-run-*/serial.log"))
        self.wait_for(shown, timeout, then)

    def send(self, signum):
        self.signalled = time.monotonic()
        self.proc.send_signal(signum)
        return self.finish()

    def finish(self, timeout=120):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.parts()                  # see every part it starts (its output fits the pipes)
            time.sleep(0.05)
        out, err = self.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        self.elapsed = time.monotonic() - self.t0
        self.out, self.err = out, err
        return self.proc.returncode

    def assert_nothing_left(self):
        deadline = time.monotonic() + 5
        alive = [p for p in self.seen.values() if _running(p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if _running(p)]
        assert not alive, f"processes left behind: {[(p.pid, self.names[p.pid]) for p in alive]}"
        left = sorted(p.name for p in self.tmp.iterdir())
        assert not left, f"left in TMPDIR: {left}"

    def one_line_error(self):
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gdbfault: error: "), self.err
        return lines[0]


LIVE = []


def _role(cmdline):
    words = " ".join(cmdline)
    if "--interpreter=mi" in words:
        return "gdb"
    return "record" if "rr=record" in words else "replay" if "rr=replay" in words else "qemu"


@pytest.fixture(autouse=True)
def _stop_what_a_failed_test_left():
    """A test that fails half-way still ends its gdbfault (in order) and removes its TMPDIR."""
    yield
    while LIVE:
        g = LIVE.pop()
        if g.proc.poll() is None:
            g.proc.send_signal(signal.SIGTERM)
            try:
                g.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                g.proc.kill()
                g.proc.communicate()
        shutil.rmtree(g.tmp, ignore_errors=True)


def _running(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _plugin_built():
    from gdbfault.machine.plugins import PluginUnavailable, plugin_library
    try:
        plugin_library()
        return True
    except PluginUnavailable:
        return False


needs_plugin = pytest.mark.skipif(not _plugin_built(), reason="the TCG plugin is not built")


# -- signals ---------------------------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_the_replay_saves_counts_and_leaves_nothing(lab_built, no_leaks, tmp_path, signum):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 2000, "-o", out)
    g.wait_for_serial("GDBFAULT-START", then=1.0)            # counting the workload in the replay
    assert g.send(signum) == 128 + signum
    name = signal.Signals(signum).name
    line = g.one_line_error()
    assert f"stopped by {name}" in line and f"saved to {out}" in line
    res = json.loads(out.read_text())
    assert not res["run"]["complete"] and res["run"]["error"].startswith(f"stopped by {name}")
    assert res["run"]["exit"].startswith(f"stopped by gdbfault ({name}")   # not "still running"
    assert res["run"]["exit_status"] is not None                            # QEMU really ended
    entry = next(p for p in res["probes"] if p["role"] == "fault entry")
    assert 0 < entry["hits"]["workload"] < 2 * 2000                         # partial, not zeros
    assert not any(p["shape"].startswith("never returned") for p in res.get("paths", []))
    g.assert_nothing_left()


@pytest.mark.qemu
def test_signal_during_the_recording_stops_it(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 50_000_000, "-o", out)
    g.wait_for(lambda names: "qemu-system-i386" in names, then=0.5)
    assert g.send(signal.SIGTERM) == 143
    res = json.loads(out.read_text())
    assert res["run"]["exit"] == "stopped by gdbfault (SIGTERM) while recording"
    assert res["record"]["exit"] == "stopped by gdbfault"
    assert "gdb" not in g.roles.values()
    g.assert_nothing_left()


@pytest.mark.qemu
def test_ctrl_c_stops_both_runs_of_compare_and_saves_them(lab_built, no_leaks, tmp_path):
    out = tmp_path / "cmp.json"
    g = Gdbfault(tmp_path, "compare", "--iterations", 3000, "-o", out)
    both = 2 if (os.cpu_count() or 1) > 1 else 1
    g.wait_for(lambda names: names.count("gdb") >= both, timeout=180)
    g.wait_for_serial("GDBFAULT-START", then=1.5)
    assert g.send(signal.SIGINT) == 130
    assert time.monotonic() - g.signalled < 20           # not after both runs have finished
    assert "stopped by SIGINT" in g.one_line_error()
    cmp = json.loads(out.read_text())
    assert cmp["complete"] is False
    sides = [s for s in ("before", "after") if s in cmp]
    assert len(sides) == both
    for side in sides:
        assert cmp[side]["run"]["exit"] == "stopped by gdbfault (SIGINT, Ctrl-C)"
        assert cmp[side]["run"]["hits"] > 0
    g.assert_nothing_left()


@pytest.mark.qemu
def test_sigterm_stops_check_and_keeps_its_runs(lab_built, no_leaks, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[runs.vanilla]\nvariant = "vanilla"\niterations = 3000\n\n'
                    '[[expect]]\nname = "signals"\nleft = "vanilla.hits.force_sig"\nop = ">"\nright = 0\n')
    g = Gdbfault(tmp_path, "check", spec, "--save-runs", tmp_path / "runs", "--junit", tmp_path / "j.xml")
    g.wait_for_serial("GDBFAULT-START", then=1.0)
    assert g.send(signal.SIGTERM) == 143
    assert "stopped by SIGTERM" in g.one_line_error()
    saved = json.loads((tmp_path / "runs" / "vanilla.json").read_text())
    assert saved["run"]["exit"] == "stopped by gdbfault (SIGTERM)" and saved["run"]["hits"] > 0
    assert "stopped by SIGTERM" in (tmp_path / "j.xml").read_text()
    g.assert_nothing_left()



def test_sigkill_of_gdbfault_takes_its_qemu_and_gdb_along(lab_built, tmp_path):
    """A SIGKILL runs no handler: the kernel ends QEMU and GDB (their parent-death
    signal), so nothing runs on orphaned; gdbfault's guardian removes the run's
    folders, the recording's (1.6 MB) too (before, both stayed)."""
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", "200000")
    try:
        g.wait_for_serial("GDBFAULT-START", then=0.5)
        parts = [g.live("qemu-system-i386"), g.live("gdb")]
        assert {p.name.split("-")[1] for p in g.tmp.iterdir()} >= {"run", "rec"}
        g.proc.kill()
        g.proc.wait(10)
        gone, alive = psutil.wait_procs(parts, timeout=5)
        assert not [p for p in alive if _running(p)], "left running after gdbfault was SIGKILLed"
        deadline = time.monotonic() + 10
        while list(g.tmp.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list(g.tmp.iterdir()), f"left in TMPDIR: {sorted(p.name for p in g.tmp.iterdir())}"
    finally:
        for p in g.seen.values():
            if _running(p):
                p.kill()
        shutil.rmtree(g.tmp, ignore_errors=True)

@pytest.mark.qemu
def test_a_live_patch_run_stopped_while_recording_says_how(lab_built, no_leaks, tmp_path):
    """The recording of a --live-patch run has GDB attached (the patch must be part of it)."""
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 3_000_000, "--live-patch",
                 REPO / "qemu/kernel/patches/0001-user-faults-skip-exception-table.patch", "-o", out)
    g.wait_for(lambda names: "qemu-system-i386" in names and "gdb" in names, timeout=180, then=1.0)
    assert g.send(signal.SIGTERM) == 143
    res = json.loads(out.read_text())
    assert res["run"]["exit"] == "stopped by gdbfault (SIGTERM) while recording"
    assert res["record"]["exit"] == "stopped by gdbfault" and res["record"]["wall_s"] > 0
    g.assert_nothing_left()


@pytest.mark.qemu
def test_keep_run_dir_keeps_a_failed_recording_and_says_where(lab_built, no_leaks, tmp_path):
    """Before: a recording that failed was removed all the same, and no kept path was ever printed."""
    g = Gdbfault(tmp_path, "attach", "--qemu", "--keep-run-dir", "--append", "labtest=oops", "--iterations", 5)
    assert g.finish() == 3
    line = g.one_line_error()
    # the recording's QEMU folder (its console) and the guest folder (the guest's files, the log so far)
    kept = {p.name.split("-")[1]: p for p in g.tmp.iterdir()}
    assert sorted(kept) == ["guest", "rec"] and (kept["rec"] / "serial.log").is_file()
    assert (kept["guest"] / RECORD_LOG).is_file()
    assert "run folders kept: " in line and all(str(p) in line for p in kept.values())
    for folder in kept.values():
        shutil.rmtree(folder)
    g = Gdbfault(tmp_path, "attach", "--qemu", "--keep-run-dir", "--iterations", 5, "-q", tmpdir=g.tmp)
    assert g.finish() == 0
    kept = sorted(str(p) for p in g.tmp.iterdir())
    # the guest folder, the recording's QEMU folder and the replay's
    assert [Path(k).name.split("-")[1] for k in kept] == ["guest", "rec", "run"]
    assert all(k in g.err for k in kept) and "run folders kept (--keep-run-dir)" in g.err
    for folder in kept:
        shutil.rmtree(folder)
    g.assert_nothing_left()


@pytest.mark.qemu
def test_profile_keeps_what_it_counted_when_stopped(lab_built, no_leaks, tmp_path):
    """Before: SIGTERM at 1.5 s of a 3,000,000-iteration profile gave exit 143 and no JSON."""
    from gdbfault.machine.plugins import PluginUnavailable, plugin_library
    try:
        plugin_library("kprofile")
    except PluginUnavailable as err:
        pytest.skip(f"kernel-profile plugin not built: {err}")
    out = tmp_path / "p.json"
    g = Gdbfault(tmp_path, "profile", "--qemu", "--iterations", 3_000_000, "-o", out)
    g.wait_for(lambda names: "qemu-system-i386" in names, then=1.5)
    assert g.send(signal.SIGTERM) == 143
    assert g.one_line_error() == f"gdbfault: error: stopped by SIGTERM (the counts until then are saved to {out})"
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["run"]["exit"] == "stopped by gdbfault (SIGTERM)"
    assert saved["total"]["kernel"] > 0 and saved["functions"]
    g.assert_nothing_left()


# -- an old kernel (GRUB, replay from a snapshot at the workload's entry) ---------------

OLDBOOT = REPO / "qemu" / "kernel" / "build" / "oldboot"


def _grub_available():
    from gdbfault.kernels.grub import grub_available
    return grub_available()


needs_grub = pytest.mark.skipif(not _grub_available(), reason="GRUB i386-pc files are not installed")


def _old_kernel(iterations):
    return ("attach", "--qemu", "--kernel", OLDBOOT / "bzImage", "--system-map", OLDBOOT / "System.map",
            "--iterations", iterations)


def _recording_shows(g, text):
    return lambda _: any(text in log.read_text(errors="replace")
                         for log in g.tmp.glob("gdbfault-rec-*/serial.log"))


@pytest.mark.qemu
@needs_grub
@pytest.mark.parametrize("moment", ["boot", "workload"])
def test_old_kernel_signal_during_the_recording_stops_it(lab_built, no_leaks, tmp_path, moment):
    """At boot the recording has a GDB attached (it waits for the workload's
    entry); in the workload it runs alone. Either way: 130, nothing left."""
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, *_old_kernel(50_000_000), "-o", out)
    if moment == "boot":
        g.wait_for(lambda names: "record" in g.roles.values(), then=0.3)
    else:
        g.wait_for(_recording_shows(g, "GDBFAULT-START"), then=0.5)
    assert g.send(signal.SIGINT) == 130
    assert "stopped by SIGINT" in g.one_line_error()
    res = json.loads(out.read_text())
    assert res["run"]["exit"] == "stopped by gdbfault (SIGINT, Ctrl-C) while recording"
    assert res["record"]["exit"] == "stopped by gdbfault"
    assert "replay" not in g.roles.values()
    g.assert_nothing_left()


@pytest.mark.qemu
@needs_grub
def test_old_kernel_signal_during_the_replay_saves_counts(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, *_old_kernel(2000), "-o", out)
    g.wait_for_serial("GDBFAULT-START", then=1.0)            # the replay, started from the snapshot
    assert g.send(signal.SIGTERM) == 143
    res = json.loads(out.read_text())
    assert res["mode"]["replay_start"] == "workload entry (snapshot)"
    assert res["run"]["exit"].startswith("stopped by gdbfault (SIGTERM")
    entry = next(p for p in res["probes"] if p["role"] == "fault entry")
    assert 0 < entry["hits"]["workload"] < 2 * 2000
    g.assert_nothing_left()


@pytest.mark.qemu
@needs_grub
def test_old_kernel_qemu_killed_while_recording_is_a_guest_error(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, *_old_kernel(50_000_000), "-o", out)
    g.wait_for(_recording_shows(g, "GDBFAULT-START"), then=0.3)
    next(p for pid, p in g.seen.items() if g.roles.get(pid) == "record" and _running(p)).kill()
    assert g.finish() == 3
    assert "QEMU was killed (SIGKILL)" in g.one_line_error() and "no replay" in g.err
    assert json.loads(out.read_text())["record"]["exit_status"] == -9
    g.assert_nothing_left()


# -- parts that die --------------------------------------------------------------------

@pytest.mark.qemu
def test_qemu_killed_while_recording_is_a_guest_error_and_no_replay(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 50_000_000, "-o", out)
    g.wait_for(lambda names: "qemu-system-i386" in names, then=0.5)
    g.live("qemu-system-i386").kill()
    assert g.finish() == 3
    assert "QEMU was killed (SIGKILL)" in g.one_line_error() and "no replay" in g.err
    res = json.loads(out.read_text())
    assert res["run"]["exit_status"] == -9 and res["record"]["exit_status"] == -9
    assert "gdb" not in g.roles.values()
    g.assert_nothing_left()


@pytest.mark.qemu
def test_qemu_killed_while_gdb_sets_up_the_replay_is_a_guest_error(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 2000, "-o", out)
    g.wait_for(lambda names: "replay" in g.roles.values())
    g.live("qemu-system-i386").kill()                 # GDB's next command meets a dead target
    assert g.finish() == 3
    assert g.one_line_error().startswith("gdbfault: error: QEMU was killed (SIGKILL)")
    assert json.loads(out.read_text())["run"]["exit_status"] == -9
    g.assert_nothing_left()


@pytest.mark.qemu
def test_guest_oops_while_recording_is_reported_without_a_replay(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--append", "labtest=oops", "-o", out)
    assert g.finish() == 3
    assert "oopsed: Oops" in g.one_line_error()
    res = json.loads(out.read_text())
    assert res["record"]["exit"] == "guest kernel oopsed" and res["run"]["exit_status"] == 29
    assert res["run"]["exit"] == "guest kernel oopsed while recording"
    assert "gdb" not in g.roles.values()
    g.assert_nothing_left()


@pytest.mark.qemu
def test_timeout_bounds_the_whole_run(lab_built, no_leaks, tmp_path):
    # The recording takes a few seconds and the replay much longer: before,
    # each phase had its own --timeout.
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 600_000, "--no-trace", "--timeout", 6,
                 "-o", out)
    assert g.finish() == 3
    assert "--timeout 6 s" in g.one_line_error()
    assert g.elapsed < 6 + 3.0, g.elapsed
    assert json.loads(out.read_text())["run"]["exit"].startswith("stopped by gdbfault (--timeout)")
    g.assert_nothing_left()


@needs_plugin
@pytest.mark.qemu
def test_plugin_qemu_killed_is_exit_3_with_its_status(lab_built, no_leaks, tmp_path):
    out = tmp_path / "run.json"
    g = Gdbfault(tmp_path, "attach", "--qemu", "--backend", "plugin", "--iterations", 50_000_000, "-o", out)
    g.wait_for(lambda names: "qemu-system-i386" in names, then=1.0)
    g.live("qemu-system-i386").kill()
    assert g.finish() == 3
    assert "QEMU was killed (SIGKILL)" in g.one_line_error()
    assert json.loads(out.read_text())["run"]["exit_status"] == -9
    g.assert_nothing_left()


@needs_plugin
@pytest.mark.qemu
@pytest.mark.parametrize("how", ["ctrl-c", "timeout"])
def test_plugin_keeps_its_counts_when_stopped(lab_built, no_leaks, tmp_path, how):
    out = tmp_path / "run.json"
    extra = ["--timeout", 4] if how == "timeout" else []
    g = Gdbfault(tmp_path, "attach", "--qemu", "--backend", "plugin", "--iterations", 50_000_000,
                 "-o", out, *extra)
    if how == "ctrl-c":
        g.wait_for(lambda names: "qemu-system-i386" in names, then=2.0)
        assert g.send(signal.SIGINT) == 130
    else:
        assert g.finish() == 3
    res = json.loads(out.read_text())
    assert res["run"]["exit"].startswith("stopped by gdbfault")
    hits = {p["role"]: p["hits"]["workload"] for p in res["probes"]}
    assert hits["signal forced"] > 1000                     # QEMU's orderly exit wrote them
    assert hits["fault entry"] in range(2 * hits["signal forced"] - 2, 2 * hits["signal forced"] + 3)
    g.assert_nothing_left()


# -- where files go --------------------------------------------------------------------

@pytest.mark.qemu
@pytest.mark.parametrize("odd", ["with space", "with,comma"])
def test_a_temp_dir_with_a_space_or_a_comma_works(lab_built, no_leaks, tmp_path, odd):
    tmpdir = Path(tempfile.mkdtemp(prefix=odd))
    fallback_before = temp_entries("/tmp")
    g = Gdbfault(tmp_path, "attach", "--qemu", "--iterations", 5, "--format", "json", tmpdir=tmpdir)
    assert g.finish() == 0, g.err
    assert json.loads(g.out)["run"]["complete"]
    g.assert_nothing_left()
    assert temp_entries("/tmp") <= fallback_before          # the fallback dir is cleaned too


# -- attaching to a QEMU gdbfault did not start -----------------------------------------

@pytest.mark.qemu
def test_attach_duration_is_kept_and_the_qemu_is_named(lab_built, no_leaks, tmp_path):
    from gdbfault.base.locations import lab_kernel, workload_binary
    from gdbfault.machine.qemu import Machine, MachineConfig
    kernel, _ = lab_kernel("vanilla")
    with Machine(MachineConfig(kernel=kernel, initrd=[workload_binary("mprotect")],
                               append="iterations=100000000", halted=False, icount=False)) as m:
        m.start()
        out = tmp_path / "run.json"
        g = Gdbfault(tmp_path, "attach", "--pid", m.pid, "--kernel", kernel, "--duration", 3, "-o", out)
        assert g.finish() == 0, g.err
        assert g.elapsed < 3 + 6, g.elapsed          # was 15 s: a 10 s wait for a SIGINT stop
        res = json.loads(out.read_text())
        assert res["run"]["wall_s"] < 3 + 1
        assert res["tool"]["qemu"][0].isdigit() and res["workload"]["qemu_pid"] == m.pid
        assert "workload None" not in g.out and f"attached to the running QEMU at {m.gdb_socket}" in g.out
        assert m.poll() is None                       # left running
        g.assert_nothing_left()


def test_attach_to_a_listener_that_is_no_gdbstub_fails_fast(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        g = Gdbfault(tmp_path, "attach", "--port", listener.getsockname()[1], "--duration", 5)
        assert g.finish() == 2
    assert "does not answer GDB's remote protocol" in g.one_line_error()
    assert g.elapsed < 5 + 2
    g.assert_nothing_left()


# -- bad input: one line, exit 2, before anything boots ----------------------------------

BAD_INPUT = [
    (["attach", "--qemu", "-o", "."], "is a directory"),
    (["attach", "--qemu", "-o", "no/such/dir/run.json"], "does not exist"),
    (["attach", "--qemu", "--iterations", 2 ** 32], "between 1 and 4294967289"),
    (["attach", "--qemu", "--iterations", 0], "between 1 and"),
    (["attach", "--qemu", "--system-map", "/dev/null"], "--system-map goes with a kernel you bring"),
    (["attach", "--qemu", "--timeout", 0], "--timeout must be positive"),
    (["attach", "--qemu", "--no-such-option"], "see gdbfault attach --help"),
    (["compare", "--iterations", "many"], "see gdbfault compare --help"),
    (["attach"], "one of the arguments --qemu --port --socket --pid is required"),
    (["compare", "-o", "."], "is a directory"),
    (["attach", "--qemu", "--iterations", 200, "--append", "iterations=5"], "disagrees with --iterations 200"),
    (["check", REPO / "qemu/checks/seed-patch.toml", "--junit", "."], "--junit . is a directory"),
    (["profile", "--qemu", "-o", "."], "is a directory"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(map(str, a)) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2_before_any_boot(tmp_path, args, message):
    g = Gdbfault(tmp_path, *args)
    assert g.finish() == 2
    assert message in g.one_line_error()
    assert not g.seen and not list(tmp_path.glob("**/*.tmp"))
    g.assert_nothing_left()


def test_plot_without_matplotlib_fails_before_the_run(tmp_path):
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = dict(os.environ, PYTHONPATH=f"{shim.parent}{os.pathsep}{REPO}", TMPDIR=str(tmp_path))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gdbfault", "attach", "--qemu", "--plot", "p.png"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == \
        "gdbfault: error: --plot needs matplotlib — pip install matplotlib"
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("kind", ["directory", "binary", "missing keys", "bad types"])
def test_report_on_something_that_is_no_run(tmp_path, kind):
    target = tmp_path / "x.json"
    if kind == "directory":
        target.mkdir()
    elif kind == "binary":
        target.write_bytes(bytes(range(256)))
    elif kind == "missing keys":
        target.write_text('{"schema": "gdbfault.run/1", "tool": {}}')
    else:
        run = json.loads((REPO / "tests" / "data" / "check-vanilla-mprotect-1000.json").read_text())
        run["probes"] = [{"role": "x"}]
        target.write_text(json.dumps(run))
    r = subprocess.run([sys.executable, "-m", "gdbfault", "report", str(target)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gdbfault: error: {target}")


def test_exit_codes_are_in_help():
    r = subprocess.run([sys.executable, "-m", "gdbfault", "attach", "--help"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    for code in ("0 ", "1 ", "2 ", "3 ", "130", "143", "129"):
        assert f"\n  {code}" in r.stdout


def test_a_failed_save_leaves_no_temporary(tmp_path):
    from gdbfault.base.errors import GdbfaultError
    from gdbfault.views.report import save_json
    target = tmp_path / "full"
    target.mkdir()
    (target / "inside").write_text("x")         # a non-empty directory cannot be replaced
    with pytest.raises(GdbfaultError, match="cannot write"):
        save_json({"a": 1}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


# -- what a partial result says ----------------------------------------------------------

def test_paths_cut_off_by_a_stop_are_named_so():
    from gdbfault.model.paths import summarise_paths
    from gdbfault.probing.measure import open_path_label
    trace = {"paths": [], "open": [{"phase": "workload", "events": ["exception search"]}]}
    assert summarise_paths(trace)[0]["shape"].startswith("never returned (oops?)")
    assert summarise_paths(trace, open_label=open_path_label(None))[0]["shape"] == \
        "cut off by the stop: exception search"
    assert open_path_label(29) is None                              # an oops: never returned
    assert open_path_label(-9) == "cut off (QEMU was killed (SIGKILL))"


def test_compare_header_of_the_plugin_backend_has_no_gdb_none():
    from gdbfault.analysis.compare import build_comparison, render_compare

    def run(variant):
        return {"schema": "gdbfault.run/1", "run": {},
                "kernel": {"lab": True, "variant": variant, "path": "k"}, "probes": [], "guest": None,
                "workload": {"name": "mprotect", "iterations": 10}, "checks": [],
                "tool": {"qemu": "7.2", "gdb": None}, "mode": {"backend": "plugin", "icount": True}}
    text = render_compare(build_comparison(run("vanilla"), run("patched")))
    assert "gdb None" not in text and "backend: plugin" in text.splitlines()[1]


def test_cost_plot_stays_readable_with_one_far_outlier(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from gdbfault.views.plot import _panel
    from gdbfault.model.result import Kernel, Mode, RunResult, Tool, Workload
    row = {"shape": "resolved (handle_mm_fault)", "median": 168, "cost_hist": {"168": 1999, "8443": 1}}
    run = RunResult(tool=Tool(), kernel=Kernel("k"), workload=Workload(), mode=Mode(), probes=[], paths=[row])
    fig, ax = plt.subplots()
    _panel(ax, [("vanilla", run)], row["shape"])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["8443 ×1"]         # the outlier is labelled
    lo, hi = ax.get_xlim()
    assert lo < 168 and hi > 8443
    plt.close(fig)
