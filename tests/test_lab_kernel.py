"""The lab kernel (qemu/kernel/) honours the contract in qemu/README.md.

Everything here is real: both kernel variants are built with make, booted
under qemu-system-i386 (TCG) with the real workloads as init, and judged by
QEMU's exit status, the serial console and each workload's own
GDBFAULT-RESULT line.  The last tests count probe hits with plain GDB (the
anchor script in ../shared/anchors) and compare them with the ground-truth
table of qemu/README.md.

Iteration counts are small (200) so the whole file runs in well under two
minutes on two cores; QEMU runs one at a time.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL_DIR = ROOT / "qemu" / "kernel"
WL_BUILD = ROOT / "qemu" / "workloads" / "build"
ANCHOR = Path(__file__).resolve().parents[2] / "shared/anchors/bare_gdb_count.py"
VARIANTS = ("vanilla", "patched")
WORKLOADS = ("mprotect", "demand", "efault", "mixed")
PROBES = "do_page_fault,search_exception_table,force_sig,handle_mm_fault"
N = 200

EXIT_REBOOT, EXIT_INIT, EXIT_OOPS = 0, 3, 29

pytestmark = pytest.mark.qemu


def _missing_tools():
    need = ("qemu-system-i386", "gcc", "make", "patch", "ld", "nm")
    return [t for t in need if not shutil.which(t)]


@pytest.fixture(scope="module")
def built():
    """Build both kernels and the workloads (incremental make)."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"lab kernel needs {', '.join(missing)} (installed by the project's setup)")
    for d in (KERNEL_DIR, ROOT / "qemu" / "workloads"):
        r = subprocess.run(["make", "-C", str(d)], capture_output=True, text=True)
        assert r.returncode == 0, f"make -C {d} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return True


def kernel(variant):
    return KERNEL_DIR / "build" / variant / "kernel.elf"


KTEST = KERNEL_DIR / "build" / "tests" / "ktest.elf"


def boot(tmp_path, variant, workload, append, *extra, timeout=60):
    """Boot as in qemu/README.md; returns (exit status or None on timeout, serial text).

    workload is a name in qemu/workloads/build, or a Path to another init."""
    init = workload if isinstance(workload, Path) else WL_BUILD / f"{workload}.elf"
    log = tmp_path / f"serial-{variant}-{init.stem}-{time.monotonic_ns()}.log"
    cmd = ["qemu-system-i386", "-m", "64", "-nodefaults", "-display", "none", "-no-reboot",
           "-kernel", str(kernel(variant)), "-initrd", str(init),
           "-append", append, "-serial", f"file:{log}",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        status = None
    text = log.read_text(errors="replace") if log.exists() else ""
    return status, text


def result(serial):
    lines = [l for l in serial.splitlines() if l.startswith("GDBFAULT-RESULT ")]
    assert len(lines) == 1, f"expected one GDBFAULT-RESULT line, serial was:\n{serial[-3000:]}"
    return json.loads(lines[0].split(" ", 1)[1])


# ---------------------------------------------------------------- build

def test_build_outputs_and_system_map(built):
    for v in VARIANTS:
        elf, smap = kernel(v), KERNEL_DIR / "build" / v / "System.map"
        assert elf.is_file() and smap.is_file()
        head = elf.read_bytes()[:8192]
        assert (0x1BADB002).to_bytes(4, "little") in head, "multiboot header not in first 8 KiB"
        syms = {}
        for line in smap.read_text().splitlines():
            m = re.fullmatch(r"([0-9a-f]{8}) ([A-Za-z]) (\S+)", line)
            assert m, f"not System.map format: {line!r}"
            syms[m.group(3)] = (int(m.group(1), 16), m.group(2))
        for name in ("do_page_fault", "search_exception_table", "search_one_table",
                     "force_sig", "handle_mm_fault", "find_vma", "do_wp_page",
                     "do_anonymous_page", "handle_pte_fault", "page_fault",
                     "ret_from_exception", "system_call"):
            assert name in syms and syms[name][1] == "T", f"{name} not a global text symbol in {v}"
            assert syms[name][0] >= 0xC0100000
        assert "linux_banner" in syms
        addrs = [int(l[:8], 16) for l in smap.read_text().splitlines()]
        assert addrs == sorted(addrs)
        assert f"({v})".encode() in elf.read_bytes()


def test_patch_moves_user_check_ahead_of_search(built):
    def order(path):
        src = path.read_text()
        bad = src.index("bad_area:")
        return src.index("search_exception_table(regs->eip)", bad) < src.index("if (error_code & 4)", bad)
    assert order(KERNEL_DIR / "fault.c") is True            # 1997: search first
    assert order(KERNEL_DIR / "build/patched/src/fault.c") is False  # patched: user check first


# ---------------------------------------------------------------- workloads

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_runs(built, tmp_path, variant, workload):
    status, serial = boot(tmp_path, variant, workload, f"iterations={N}")
    assert status == EXIT_REBOOT, f"QEMU exit {status}, serial:\n{serial[-3000:]}"
    assert f"gdbfault lab kernel 2.0.36-lab ({variant}) #1" in serial
    r = result(serial)
    assert r["workload"] == workload and r["iterations"] == N and r["pid"] == 1
    assert r["errors"] == 0 and r["zero_ok"] is True
    expect = {
        "mprotect": dict(sigsegv=N, efault=0, demand_pages=0),
        "demand": dict(sigsegv=0, efault=0, demand_pages=N),
        "efault": dict(sigsegv=0, efault=N, demand_pages=0),
        "mixed": dict(sigsegv=N, efault=N, demand_pages=N),
    }[workload]
    assert {k: r[k] for k in expect} == expect
    assert r["ticks_per_s"] == 100
    assert "Oops" not in serial and "Kernel panic" not in serial


def test_command_line_split_like_linux(built, tmp_path):
    status, serial = boot(tmp_path, "vanilla", "efault",
                          "console=ttyS0 quiet iterations=3 FOO=bar extra")
    assert status == EXIT_REBOOT
    assert "Starting init: init quiet extra (env: iterations=3 FOO=bar)" in serial
    assert result(serial)["iterations"] == 3


def test_init_exit_status(built, tmp_path):
    # a malformed iterations= makes the workload exit(1): QEMU status 3
    status, serial = boot(tmp_path, "vanilla", "mprotect", "iterations=bogus")
    assert status == EXIT_INIT, serial[-2000:]
    assert "init exited with code 1" in serial


def test_panic_on_bad_init(built, tmp_path):
    status, serial = boot(tmp_path, "vanilla", KERNEL_DIR / "README.md", "")
    assert status == 31, serial[-2000:]
    assert "Kernel panic: could not start init" in serial


@pytest.mark.parametrize("variant", VARIANTS)
def test_labtest_oops(built, tmp_path, variant):
    status, serial = boot(tmp_path, variant, "mprotect", "labtest=oops")
    assert status == EXIT_OOPS, serial[-2000:]
    assert re.search(r"^Oops: [0-9a-f]{4}$", serial, re.M)
    assert "EIP:    0010:[<c01" in serial
    assert "GDBFAULT-START" not in serial


def test_labtest_hang(built, tmp_path):
    status, serial = boot(tmp_path, "vanilla", "mprotect", "labtest=hang", timeout=3)
    assert status is None, "labtest=hang should never end by itself"
    assert "labtest=hang" in serial and "GDBFAULT" not in serial


def test_boot_reports_exception_tables(built, tmp_path):
    status, serial = boot(tmp_path, "vanilla", "efault", "iterations=1")
    assert status == EXIT_REBOOT
    m = re.search(r"Exception table: (\d+) entries", serial)
    assert m and int(m.group(1)) >= 80
    mods = re.findall(r"module (\w+): (\d+) exception table entries", serial)
    assert len(mods) >= 2 and all(int(n) > 0 for _, n in mods)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_selftest_init(built, tmp_path, variant):
    """qemu/kernel/tests/ktest.c: module exception tables, the on-stack signal
    trampoline, SA_ONESHOT, masks, stack growth, brk, vm area split/merge."""
    status, serial = boot(tmp_path, variant, KTEST, "")
    fails = [l for l in serial.splitlines() if l.startswith("KTEST FAIL")]
    assert not fails, "\n".join(fails)
    assert status == EXIT_REBOOT, serial[-2000:]
    m = re.search(r"^KTEST-RESULT pass=(\d+) fail=0$", serial, re.M)
    assert m and int(m.group(1)) >= 30, serial[-2000:]


@pytest.mark.parametrize("mode, message", [
    ("segv", "init (pid 1) killed by signal 11 (SIGSEGV)"),
    ("badframe", "bad sigreturn frame"),
])
def test_fatal_signals_end_the_run(built, tmp_path, mode, message):
    status, serial = boot(tmp_path, "vanilla", KTEST, mode)
    assert status == EXIT_INIT, serial[-2000:]
    assert message in serial
    assert "init exited with code 139 (killed by signal 11)" in serial


def test_icount_is_deterministic_and_patch_is_cheaper(built, tmp_path):
    cpi = {}
    for v in VARIANTS:
        runs = [result(boot(tmp_path, v, "mprotect", "iterations=1000",
                            "-icount", "shift=0")[1]) for _ in range(2)]
        assert runs[0]["cycles"] == runs[1]["cycles"], f"{v}: icount run not reproducible"
        cpi[v] = runs[0]["cycles_per_iteration"]
    # the seed's point: user faults no longer pay for the exception-table search
    assert cpi["patched"] < cpi["vanilla"]


# ---------------------------------------------------------------- bare GDB

def anchor(variant, workload, iterations):
    if not ANCHOR.is_file():
        pytest.skip(f"anchor script not found: {ANCHOR}")
    if not shutil.which("gdb"):
        pytest.skip("gdb not installed")
    r = subprocess.run([sys.executable, str(ANCHOR), "--kernel", str(kernel(variant)),
                        "--symbols", PROBES, "--initrd", str(WL_BUILD / f"{workload}.elf"),
                        "--append", f"iterations={iterations}", "--qemu-arg=-no-reboot",
                        "--timeout", "120"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])["hits"]


# GDB over QEMU's gdbstub now and then reports one hit twice (FACTS.md; seen
# here at about 1 in 1000 hits in plain TCG, never under -icount, while the
# guest's own counts stay exact).  Only these bare-GDB tests allow for that:
# a few extra hits, never fewer.
def near(got, want):
    return want <= got <= want + 2 + want // 100


@pytest.mark.parametrize("variant", VARIANTS)
def test_ground_truth_mprotect_under_gdb(built, variant):
    hits = anchor(variant, "mprotect", N)
    sigsegv = N
    assert near(hits["force_sig"], sigsegv), hits
    assert near(hits["handle_mm_fault"], sigsegv), hits
    assert near(hits["do_page_fault"], 2 * sigsegv), hits
    if variant == "vanilla":
        assert near(hits["search_exception_table"], sigsegv), hits
    else:
        assert hits["search_exception_table"] == 0, hits


def test_ground_truth_mixed_under_gdb(built):
    n = 50
    for variant in VARIANTS:
        hits = anchor(variant, "mixed", n)
        search = (n + n) if variant == "vanilla" else n   # sigsegv + efault | efault
        assert near(hits["search_exception_table"], search), (variant, hits)
        assert near(hits["force_sig"], n), (variant, hits)
        assert near(hits["handle_mm_fault"], n + n), (variant, hits)
        assert near(hits["do_page_fault"], 2 * n + n + n), (variant, hits)
