"""`--workload FILE`: the user's own static i386 program as the guest's init.

Counted like a built-in workload; checked against the guest (✓/✗) only when
it prints a GDBFAULT-RESULT line. Runs on the lab kernel (fast); the same
option drives the bring-your-own-kernel path (tests/test_old_kernels.py).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A minimal init of the user's own: one write, one fresh anonymous page
# (old mmap, 90) touched, then reboot (pid 1) — no GDBFAULT-RESULT line.
OWN_INIT = r"""
static long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ __volatile__("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}
void _start(void)
{
	static const char msg[] = "hello from my own init\n";
	static long args[6] = { 0, 4096, 3, 0x22, -1, 0 };   /* RW, MAP_PRIVATE|MAP_ANONYMOUS */
	char *page = (char *)sys3(90, (long)args, 0, 0);
	page[0] = 1;                        /* a fresh page: one demand fault */
	sys3(4, 1, (long)msg, sizeof msg - 1);
	sys3(88, 0xfee1dead, 672274793, 0x01234567);
	for (;;)
		;
}
"""


def _gdbfault(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gdbfault", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def own_init(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    (folder / "init.c").write_text(OWN_INIT)
    subprocess.run(["gcc", "-m32", "-static", "-nostdlib", "-ffreestanding", "-fno-pic", "-no-pie",
                    "-fno-stack-protector", "-O1", "-o", str(folder / "init"), str(folder / "init.c")],
                   check=True)
    return folder / "init"


@pytest.mark.qemu
def test_own_workload_without_result_line_is_counted_not_checked(lab_built, own_init, no_leaks):
    done = _gdbfault("attach", "--qemu", "--workload", str(own_init), "-q", "--format", "json")
    assert done.returncode == 0, done.stderr
    import json
    res = json.loads(done.stdout)
    assert res["workload"]["own"] and res["guest"] is None and res["checks"] == []
    assert res["run"]["complete"]
    entry = next(p for p in res["probes"] if p["role"] == "fault entry")
    assert entry["hits"]["workload"] >= 1                       # the page it touched


@pytest.mark.qemu
def test_own_workload_with_result_line_is_checked(lab_built, tmp_path, no_leaks):
    """A program of one's own that prints GDBFAULT-RESULT (here: a copy of the
    built mprotect workload, as a user's file) gets its counts checked."""
    mine = tmp_path / "my-mprotect"
    shutil.copy(REPO / "qemu" / "workloads" / "build" / "mprotect.elf", mine)
    done = _gdbfault("attach", "--qemu", "--workload", str(mine), "--iterations", "10", "-q")
    assert done.returncode == 0, done.stderr
    assert "counts match the guest's own summary ✓" in done.stdout


def test_bad_own_workloads_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    arm = tmp_path / "arm.elf"                # an ELF for another machine (EM_ARM)
    arm.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (40).to_bytes(2, "little")
                    + bytes(32))
    native = REPO / "qemu" / "workloads" / "build" / "x86_64" / "mprotect.elf"
    cases = [(str(tmp_path / "missing"), "neither a built-in workload nor a file"),
             (str(text), "is not an ELF file"),
             (str(arm), "neither an i386 nor an x86_64 program"),
             (sys.executable if Path(sys.executable).is_file() else "/bin/sh", "not a plain executable"),
             # an x86_64 program on the (i386) lab kernel
             (str(native), "is an x86_64 program; the i386 kernel")]
    for value, message in cases:
        done = _gdbfault("attach", "--qemu", "--workload", value, "-q", timeout=60)
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and message in err[0], (value, done.stderr)
