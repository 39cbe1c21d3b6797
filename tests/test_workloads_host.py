"""The guest workloads run unchanged on a real Linux kernel (this host).

Each workload in qemu/workloads/ is a freestanding static i386 ELF that makes
only Linux i386 ``int $0x80`` system calls.  Here every one runs as an
ordinary child process (never pid 1, so it ends with exit(0), never reboot),
and its GDBFAULT-RESULT line is checked against the counts the contract in
qemu/README.md promises.

Safety: the child additionally runs without CAP_SYS_BOOT (dropped from the
bounding set before exec), so even a broken pid check could not reboot the
host.
"""

import ctypes
import json
import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WL_DIR = ROOT / "qemu" / "workloads"
BUILD = WL_DIR / "build"
WORKLOADS = ("mprotect", "demand", "efault", "mixed")
DEFAULTS = {"mprotect": 10000, "demand": 1000, "efault": 10000, "mixed": 1000}
RESULT_KEYS = {
    "workload", "iterations", "sigsegv", "efault", "demand_pages", "zero_ok",
    "cycles", "cycles_per_iteration", "ticks_per_s", "real_ticks",
    "user_ticks", "sys_ticks", "pid", "errors",
}

PR_CAPBSET_DROP = 24
CAP_SYS_BOOT = 22


def _drop_sys_boot():
    """preexec_fn: remove CAP_SYS_BOOT before exec (no-op if not allowed)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; the pid check is primary
        pass


def _can_build_i386():
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "i686", "i386"):
        return False
    if not shutil.which("gcc") or not shutil.which("make"):
        return False
    probe = subprocess.run(
        ["gcc", "-m32", "-ffreestanding", "-nostdlib", "-c", "-x", "c", "-",
         "-o", os.devnull],
        input=b"int f(void){return 0;}\n", capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_build_i386(),
    reason="needs an x86 Linux host with gcc -m32 (gcc-multilib)")


@pytest.fixture(scope="session")
def built():
    r = subprocess.run(["make", "-C", str(WL_DIR)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for w in WORKLOADS:
        assert (BUILD / f"{w}.elf").is_file()
    return BUILD


def run_workload(name, args=(), env=None, timeout=120):
    """Run one workload as a plain child; return (returncode, stdout lines)."""
    elf = BUILD / f"{name}.elf"
    # stdout must be a pipe (not /dev/null): write(1, bad, 8) only faults
    # when the file actually copies from the buffer.
    proc = subprocess.Popen(
        [str(elf), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env if env is not None else {}, preexec_fn=_drop_sys_boot)
    assert proc.pid != 1
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def parse(out):
    lines = out.splitlines()
    starts = [ln for ln in lines if ln.startswith("GDBFAULT-START ")]
    results = [ln for ln in lines if ln.startswith("GDBFAULT-RESULT ")]
    progress = [ln for ln in lines if ln.startswith("GDBFAULT-PROGRESS ")]
    assert len(starts) == 1, out
    assert len(results) == 1, out
    assert lines.index(starts[0]) < lines.index(results[0])
    start = json.loads(starts[0].split(" ", 1)[1])
    result = json.loads(results[0].split(" ", 1)[1])
    return start, result, progress


def expected(name, n):
    return {
        "sigsegv": n if name in ("mprotect", "mixed") else 0,
        "efault": n if name in ("efault", "mixed") else 0,
        "demand_pages": n if name in ("demand", "mixed") else 0,
    }


def check_result(name, n, start, result, progress, rc):
    assert rc == 0
    assert start["workload"] == name and start["iterations"] == n
    assert RESULT_KEYS <= set(result), RESULT_KEYS - set(result)
    assert result["workload"] == name
    assert result["iterations"] == n
    for key, want in expected(name, n).items():
        assert result[key] == want, (key, result)
    assert result["zero_ok"] is True
    assert result["errors"] == 0
    assert result["ticks_per_s"] == 100
    assert result["cycles"] > 0
    assert result["cycles_per_iteration"] == result["cycles"] // n
    assert result["pid"] == start["pid"] != 1
    for key in ("real_ticks", "user_ticks", "sys_ticks"):
        assert 0 <= result[key] < 100 * 3600
    assert 1 <= len(progress) <= 20
    done = [int(p.split()[1].split("/")[0]) for p in progress]
    assert done == sorted(done) and done[-1] == n
    assert all(p.split()[1].split("/")[1] == str(n) for p in progress)


@pytest.mark.parametrize("name", WORKLOADS)
def test_argv_iterations(built, name):
    rc, out, err = run_workload(name, ["iterations=200"])
    start, result, progress = parse(out)
    check_result(name, 200, start, result, progress, rc)
    assert err == ""


@pytest.mark.parametrize("name", WORKLOADS)
def test_env_iterations(built, name):
    rc, out, _ = run_workload(name, env={"iterations": "37", "OTHER": "x=1"})
    start, result, progress = parse(out)
    check_result(name, 37, start, result, progress, rc)


@pytest.mark.parametrize("name", WORKLOADS)
def test_default_iterations(built, name):
    rc, out, _ = run_workload(name, ["some-arg", "console=ttyS0"])
    start, result, progress = parse(out)
    check_result(name, DEFAULTS[name], start, result, progress, rc)


def test_argv_overrides_env(built):
    rc, out, _ = run_workload("mprotect", ["iterations=5"], env={"iterations": "9"})
    start, result, progress = parse(out)
    check_result("mprotect", 5, start, result, progress, rc)


@pytest.mark.parametrize("name", WORKLOADS)
def test_elf_is_simple_et_exec(built, name):
    data = (BUILD / f"{name}.elf").read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1 and data[5] == 1  # 32-bit LE
    e_type, e_machine, _, e_entry, e_phoff = struct.unpack_from("<HHIII", data, 16)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 42)
    assert e_type == 2 and e_machine == 3  # ET_EXEC, EM_386
    phdrs = [struct.unpack_from("<IIIIIIII", data, e_phoff + i * e_phentsize)
             for i in range(e_phnum)]
    types = [p[0] for p in phdrs]
    assert set(types) == {1}, types  # PT_LOAD only: no PT_DYNAMIC/PT_INTERP/PT_TLS
    assert len(phdrs) <= 3
    assert min(p[2] for p in phdrs) == 0x08048000
    text = [p for p in phdrs if p[2] <= e_entry < p[2] + p[5]]
    assert text and text[0][6] & 1  # entry in an executable segment (p_flags PF_X)
    top = max(p[2] + p[5] for p in phdrs)
    assert top - 0x08048000 < 1 << 20


def test_children_lack_cap_sys_boot():
    """The safety net itself: a child started like the workloads cannot reboot."""
    if os.geteuid() != 0:
        pytest.skip("not root: CAP_SYS_BOOT is absent anyway")
    out = subprocess.run(["cat", "/proc/self/status"], capture_output=True,
                         text=True, preexec_fn=_drop_sys_boot).stdout
    caps = {ln.split(":")[0]: int(ln.split()[1], 16)
            for ln in out.splitlines() if ln.startswith("Cap")}
    assert not caps["CapEff"] & (1 << CAP_SYS_BOOT)
    assert not caps["CapPrm"] & (1 << CAP_SYS_BOOT)


def test_zero_iterations(built):
    rc, out, _ = run_workload("mixed", ["iterations=0"])
    start, result, progress = parse(out)
    assert rc == 0 and progress == []
    assert result["iterations"] == 0 and result["cycles_per_iteration"] == 0
    assert result["sigsegv"] == result["efault"] == result["demand_pages"] == 0
    assert result["errors"] == 0


@pytest.mark.parametrize("bad", ["iterations=abc", "iterations=", "iterations=99999999999"])
def test_bad_iterations_is_an_error(built, bad):
    rc, out, _ = run_workload("efault", [bad])
    assert rc == 1
    assert "GDBFAULT-START" not in out and "GDBFAULT-RESULT" not in out
    line = [ln for ln in out.splitlines() if ln.startswith("GDBFAULT-ERROR ")]
    assert len(line) == 1
    assert json.loads(line[0].split(" ", 1)[1])["error"] == "bad iterations= value"
