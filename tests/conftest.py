"""Shared fixtures: built lab kernels and workloads, and a process-leak check."""
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
KERNEL_BUILD = REPO / "qemu" / "kernel" / "build"
WORKLOAD_BUILD = REPO / "qemu" / "workloads" / "build"


def _make(dirname):
    subprocess.run(["make", "-s", "-C", str(REPO / dirname)], check=True)


@pytest.fixture(scope="session")
def lab_built():
    """Build (if needed) both lab kernels and all workloads."""
    _make("qemu/workloads")
    _make("qemu/kernel")
    for variant in ("vanilla", "patched"):
        assert (KERNEL_BUILD / variant / "kernel.elf").is_file()
    return KERNEL_BUILD


def tagged_processes(tag, names=("qemu-system-i386", "qemu-system-x86_64", "gdb")):
    """Live QEMU/GDB processes started with GDBFAULT_TEST_TAG=tag in their environment."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] in names and p.status() != psutil.STATUS_ZOMBIE \
                    and p.environ().get("GDBFAULT_TEST_TAG") == tag:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def temp_entries(base=None):
    """gdbfault's own entries (run, record, boot, root, attach dirs) in a temp directory."""
    base = Path(base or tempfile.gettempdir())
    return {p.name for p in base.glob("gdbfault-*")}


@pytest.fixture(scope="session", autouse=True)
def no_temp_leaks():
    """The whole suite leaves no gdbfault-* entry in its temp directory.

    The session gets a temp directory of its own (inherited by every
    subprocess through TMPDIR), so another test session on the machine
    cannot make this check fail or pass."""
    import os
    import shutil
    private = tempfile.mkdtemp(prefix="gfs-")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None
    try:
        yield private
        time.sleep(0.5)                     # a subprocess's last rmtree
        left = temp_entries(private)
        assert not left, f"the test suite left temp entries behind in $TMPDIR: {sorted(left)}"
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
        tempfile.tempdir = None
        shutil.rmtree(private, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def no_shared_recordings_cache():
    """No test replays another test's recording through the user's recordings cache: the cache is
    off unless a test points it at a folder of its own (GDBFAULT_RECORDING_CACHE, as
    tests/test_recordings.py does). A test about the recording run itself (a signal or a kill
    while recording) must see a recording happen."""
    import os
    old = os.environ.get("GDBFAULT_RECORDING_CACHE")
    os.environ["GDBFAULT_RECORDING_CACHE"] = "off"
    yield
    if old is None:
        os.environ.pop("GDBFAULT_RECORDING_CACHE", None)
    else:
        os.environ["GDBFAULT_RECORDING_CACHE"] = old


@pytest.fixture
def no_leaks(monkeypatch):
    """Tags every process the test starts; fails if a QEMU or GDB is left behind."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv("GDBFAULT_TEST_TAG", tag)
    yield tag
    deadline = time.monotonic() + 5       # exiting processes get a moment to go
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for p in left:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            names.append((p.pid, p.name()))
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not names, f"processes left behind: {names}"


def gdb_on_lab(script, variant="vanilla", iterations=3, record=False):
    """Boot a lab kernel halted with the mprotect workload, run a Python script
    in a plain `gdb -batch` attached to it, and return GDB's (stdout, stderr).
    `script` may name `%(qmp)s`, QEMU's QMP socket; record=True: QEMU records (rr=record)."""
    import dataclasses
    from gdbfault.base.locations import lab_kernel, workload_binary
    from gdbfault.machine.qemu import Machine, MachineConfig
    kernel, _ = lab_kernel(variant)
    config = MachineConfig(kernel=kernel, initrd=[workload_binary("mprotect")], append=f"iterations={iterations}")
    with Machine(config) as m:
        if record:
            m.config = dataclasses.replace(config, icount_options=f"shift=0,rr=record,rrfile={m.run_dir / 'g.rr'}",
                                           extra_args=["-net", "none"])
        m.start()
        script = script.replace("%(qmp)s", str(m.probe_qmp_socket))
        out = subprocess.run(["gdb", "-batch", "-nx", "-ex", "set architecture i386",
                              "-ex", f"file {kernel}", "-ex", f"target remote {m.gdb_socket}",
                              "-ex", f"python exec({script!r})"],
                             capture_output=True, text=True, timeout=120)
    return out.stdout, out.stderr


def debian_kernel_files(flavour):
    """(vmlinuz, System.map) of Debian bookworm's 6.1 kernel of `flavour` ("686" or "amd64"),
    fetched once by scripts/fetch-debian-kernel.sh into ~/.cache/gdbfault/kernels (or
    $GDBFAULT_KERNEL_CACHE) and reused; the test is skipped when it is not cached and
    GDBFAULT_NO_KERNEL_FETCH is set, or when the fetch fails."""
    import os
    cache = os.environ.get("GDBFAULT_KERNEL_CACHE", str(Path.home() / ".cache" / "gdbfault" / "kernels"))
    have = sorted(Path(cache).glob(f"debian-6.1.0-*-{flavour}/System.map"))
    if not have:
        if os.environ.get("GDBFAULT_NO_KERNEL_FETCH"):
            pytest.skip(f"no cached Debian {flavour} kernel and GDBFAULT_NO_KERNEL_FETCH is set")
        done = subprocess.run(["sh", str(REPO / "scripts" / "fetch-debian-kernel.sh"), "--flavour", flavour, cache],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            pytest.skip(f"could not fetch Debian's {flavour} kernel: {done.stderr.strip().splitlines()[-1:]}")
        have = [Path(done.stdout.strip().splitlines()[-1]) / "System.map"]
    folder = have[-1].parent
    return folder / "vmlinuz", folder / "System.map"


@pytest.fixture(scope="session")
def debian_kernel():
    """(vmlinuz, System.map) of Debian's 686 (i386) kernel, fetched once and cached."""
    return debian_kernel_files("686")


@pytest.fixture(scope="session")
def debian_amd64_kernel():
    """(vmlinuz, System.map) of Debian's amd64 (x86_64) kernel, fetched once and cached."""
    return debian_kernel_files("amd64")
