"""Attach to a QEMU the user started, and kill what can die: the user's guest is left as it was found.

Each test starts its own QEMU the way README.md ("Counting on a QEMU you
started") tells a user to — the lab kernel, a unix gdbstub and a QMP socket
in a private folder — then runs a real `python3 -m gdbfault attach`
against it, kills a part (GDB, QEMU, gdbfault itself) or sends a signal,
and checks the exit code, the one-line error, the saved counts and the
guest afterwards: running (QMP says so, and stays so: a breakpoint left in
QEMU would stop it within milliseconds) and unpatched (the first bytes of
do_page_fault, read with a plain gdb, are the ones it had before).
Each row of the README's fault matrix for attach is one test here.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO

pytestmark = pytest.mark.qemu

SEED = "qemu/kernel/patches/0001-user-faults-skip-exception-table.patch"
KERNEL = "qemu/kernel/build/{variant}/kernel.elf"
# The README's command line, word for word (test_the_readme_gives_this_command_line holds it there).
README_QEMU = ("qemu-system-i386 -display none -no-reboot -kernel qemu/kernel/build/vanilla/kernel.elf \\\n"
               "    -initrd qemu/workloads/build/mprotect.elf -append iterations=100000000 \\\n"
               "    -serial file:/tmp/myvm/serial.log \\\n"
               "    -gdb unix:/tmp/myvm/gdb.sock,server=on,wait=off -qmp unix:/tmp/myvm/qmp.sock,server=on,wait=off &")


class UserQemu:
    """A QEMU started as README.md says, in a private folder (`folder` stands for /tmp/myvm)."""

    def __init__(self, variant="vanilla"):
        self.folder = Path(tempfile.mkdtemp(prefix="myvm-"))
        os.chmod(self.folder, 0o700)
        self.gdb_socket, self.qmp_socket = self.folder / "gdb.sock", self.folder / "qmp.sock"
        argv = ["qemu-system-i386", "-display", "none", "-no-reboot", "-kernel", KERNEL.format(variant=variant),
                "-initrd", "qemu/workloads/build/mprotect.elf", "-append", "iterations=100000000",
                "-serial", f"file:{self.folder}/serial.log",
                "-gdb", f"unix:{self.gdb_socket},server=on,wait=off",
                "-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60      # kernel addresses are mapped once the workload runs
        while "GDBFAULT-START" not in self.serial() and time.monotonic() < deadline:
            assert self.proc.poll() is None, "the user's QEMU did not start"
            time.sleep(0.1)
        assert "GDBFAULT-START" in self.serial()

    def serial(self):
        try:
            return (self.folder / "serial.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def status(self):
        """QMP query-status (through the qemu.qmp library itself, not gdbfault's code)."""
        import asyncio
        from qemu.qmp import QMPClient

        async def ask():
            client = QMPClient("test")
            try:
                await asyncio.wait_for(client.connect(str(self.qmp_socket)), 5)
                return (await asyncio.wait_for(client.execute("query-status"), 5))["status"]
            finally:
                await client.disconnect()
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(ask())
        finally:
            loop.close()

    def entry(self, symbol="do_page_fault", size=5):
        """The first bytes of a kernel function, read with a plain gdb (which then detaches)."""
        address = next(int(line.split()[0], 16) for line in open(REPO / "qemu/kernel/build/vanilla/System.map")
                       if line.split()[2:] == [symbol])
        out = subprocess.run(["gdb", "-batch", "-nx", "-ex", "set architecture i386",
                              "-ex", f"target remote {self.gdb_socket}", "-ex", f"x/{size}xb {address:#x}",
                              "-ex", "detach"], capture_output=True, text=True, timeout=60).stdout
        line = next(line for line in out.splitlines() if line.startswith(f"{address:#x}"))
        return bytes(int(w, 16) for w in re.findall(r"\b0x([0-9a-f]{2})\b", line.split(":", 1)[1])[:size])

    def assert_running_as_found(self, entry):
        """Running, and still running a moment later (no breakpoint left), with its old entry."""
        assert self.status() == "running"
        time.sleep(1.0)
        assert self.status() == "running", "the guest stopped again: a breakpoint was left in QEMU"
        assert self.entry() == entry, "do_page_fault is still patched"
        assert self.status() == "running"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def user_qemu(lab_built, no_leaks):
    qemu = UserQemu()
    yield qemu
    qemu.close()


class Attach:
    """A `python3 -m gdbfault attach` subprocess on the user's QEMU, with a private TMPDIR."""

    def __init__(self, qemu, *args, tmp_path):
        self.tmp = Path(tempfile.mkdtemp(prefix="gf-at-"))
        self.out = tmp_path / "run.json"
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "gdbfault", "attach", "--socket", str(qemu.gdb_socket),
                                      "-o", str(self.out), *map(str, args)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def gdb(self, timeout=60):
        """Its GDB, once it runs (then the counting has started within a second or two)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    if child.name() == "gdb" and "--interpreter=mi3" in child.cmdline():   # not `gdb --version`
                        return child
                except psutil.Error:
                    pass
            time.sleep(0.1)
        pytest.fail("gdbfault's GDB never started")

    def finish(self, timeout=90):
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout, self.err = out, err
        return self.proc.returncode

    def error(self):
        lines = [l for l in self.err.strip().splitlines() if not l.startswith("counting on ")]
        assert len(lines) == 1 and lines[0].startswith("gdbfault: error: "), self.err
        return lines[0]

    def saved(self):
        return json.loads(self.out.read_text())

    def assert_nothing_left(self):
        left = sorted(p.name for p in self.tmp.iterdir())
        shutil.rmtree(self.tmp, ignore_errors=True)
        assert not left, f"left in TMPDIR: {left}"


def test_the_readme_gives_this_command_line():
    assert README_QEMU in (REPO / "README.md").read_text()


def test_gdb_killed_with_a_live_patch_in_leaves_the_guest_running_unpatched(user_qemu, tmp_path):
    """The issue's first case: kill -9 of gdbfault's GDB ~5 s in. Before: exit 2, the guest
    stopped ('debug') and patched, 0 hits and no live_patch record in the JSON."""
    entry = user_qemu.entry()
    assert entry[0] != 0xE9
    run = Attach(user_qemu, "--live-patch", SEED, tmp_path=tmp_path)
    gdb = run.gdb()
    time.sleep(5)
    gdb.kill()
    assert run.finish() == 2, run.err
    line = run.error()
    assert "GDB died" in line and "counts up to" in line and "put back as found" in line
    saved = run.saved()
    assert saved["run"]["hits"] > 0 and saved["run"]["counts_at_s"] > 0 and not saved["run"]["complete"]
    lp = saved["live_patch"]
    assert lp["applied"] and lp["unpatched"]
    assert lp["after"]["hits"]["force_sig"] > 0 and lp["after"]["hits"]["search_exception_table"] == 0
    user_qemu.assert_running_as_found(entry)
    run.assert_nothing_left()


def test_qemu_killed_mid_count_keeps_the_counts_up_to_the_last_snapshot(user_qemu, tmp_path):
    """Before: 'counts so far saved', and every count 0."""
    run = Attach(user_qemu, tmp_path=tmp_path)
    run.gdb()
    time.sleep(5)
    user_qemu.proc.kill()
    assert run.finish() == 3, run.err
    line = run.error()
    assert "went away" in line and "counts up to" in line and "nothing to put back" in line
    saved = run.saved()
    assert saved["run"]["hits"] > 0 and saved["run"]["counts_at_s"] >= 2
    assert {p["symbol"]: p["hits"]["workload"] for p in saved["probes"]}["force_sig"] > 0
    run.assert_nothing_left()


def test_sigkill_of_gdbfault_while_attached_its_guardian_puts_the_guest_back(user_qemu, tmp_path):
    """SIGKILL runs no teardown: gdbfault's GDB dies with it (parent-death signal), and its guardian
    puts the patched entry back and lets the guest run. Before: the guest stopped ('debug'), patched."""
    entry = user_qemu.entry()
    run = Attach(user_qemu, "--live-patch", SEED, tmp_path=tmp_path)
    gdb = run.gdb()
    time.sleep(4)
    run.proc.kill()
    assert run.finish() == -signal.SIGKILL
    assert "gdbfault (guardian): " in run.err and "put back as found" in run.err, run.err
    assert not psutil.pid_exists(gdb.pid) or gdb.status() == psutil.STATUS_ZOMBIE
    user_qemu.assert_running_as_found(entry)
    run.assert_nothing_left()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 0)])
def test_a_signal_while_attached_with_a_patch_detaches_in_order(user_qemu, tmp_path, signum, code):
    entry = user_qemu.entry()
    run = Attach(user_qemu, "--live-patch", SEED, tmp_path=tmp_path)
    run.gdb()
    time.sleep(4)
    run.proc.send_signal(signum)
    assert run.finish() == code, run.err
    saved = run.saved()
    assert saved["run"]["hits"] > 0 and saved["live_patch"]["unpatched"]
    assert saved["run"]["exit"].endswith("detached, guest left running")
    if code:
        assert "stopped by SIGTERM" in run.error()
    user_qemu.assert_running_as_found(entry)
    run.assert_nothing_left()


def test_attach_refuses_a_guest_that_runs_another_kernel(user_qemu, tmp_path):
    """The issue's second case: --variant patched on a vanilla guest set probes at the patched
    build's addresses and reported 0 hits as complete (exit 0)."""
    run = Attach(user_qemu, "--duration", 2, "--variant", "patched", tmp_path=tmp_path)
    assert run.finish() == 2, run.err
    line = run.error()
    assert "the running kernel is not lab kernel (patched)" in line
    assert "2.0.36-lab (vanilla)" in line and "2.0.36-lab (patched)" in line
    assert user_qemu.status() == "running"
    run = Attach(user_qemu, "--duration", 1, tmp_path=tmp_path)        # its own kernel is taken
    assert run.finish() == 0, run.err
    identity = run.saved()["kernel"]["identity"]["running"]
    assert identity["checked"] == ["banner", "code at 4 probe addresses"]
    assert user_qemu.status() == "running"
    run.assert_nothing_left()
