"""A real distribution kernel: Debian bookworm's i386 6.1 kernel, as users bring it.

The kernel (vmlinuz from linux-image-6.1.0-N-686-unsigned) and its real
System.map (from the -dbg package) are fetched once by
scripts/fetch-debian-kernel.sh into ~/.cache/gdbfault/kernels (or
$GDBFAULT_KERNEL_CACHE) and reused. The first fetch downloads ~810 MB and
decompresses the -dbg .deb for its System.map (~2 minutes here); set
GDBFAULT_NO_KERNEL_FETCH=1 to skip these tests instead of fetching (the
fixture, shared with the amd64 kernel's tests, is conftest.debian_kernel).
"""
import subprocess
import sys
from pathlib import Path

import pytest

from gdbfault.runs.booted import run_qemu
from gdbfault.model.spec import RunSpec

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 100


def hits(result, role):
    return result.probe(role).hits.workload


def test_debian_686_kernel_mprotect(debian_kernel, no_leaks):
    vmlinuz, system_map = debian_kernel
    res = run_qemu(RunSpec(kernel=str(vmlinuz), system_map=str(system_map), workload="mprotect",
                           iterations=ITERATIONS, timeout_s=900))
    boot = res.kernel.boot
    assert boot["boot_path"] == "qemu-kernel" and boot["boot_protocol"] >= "2.02"
    assert "nokaslr" in boot["command_line"] and "console=ttyS0" in boot["command_line"]
    assert res.kernel.profile == "linux-modern"
    assert res.kernel.banner.startswith("Linux version 6.1.0-")
    g = res.guest
    assert g["errors"] == 0 and g["iterations"] == ITERATIONS and g["sigsegv"] == ITERATIONS
    # every SIGSEGV went out through force_sig_fault, once
    assert hits(res, "signal forced") == g["sigsegv"]
    # user faults never search the exception table (the 2.1-series fix, still there in 6.1);
    # the kernel may search it for its own faults (6.1: when mmap_read_trylock fails)
    assert res.user_fault_searches == 0
    assert sum(p.count for p in res.paths if "signal forced" in p.events) == g["sigsegv"]
    # faults per iteration are measured, not assumed (1 on 6.1; a few stray faults allowed)
    entry = hits(res, "fault entry")
    assert ITERATIONS <= entry <= ITERATIONS + 20
    per_iter = res.probe("fault entry").per_iteration
    assert 1.0 <= per_iter < 1.2
    # boot hits are reported apart from the workload's
    assert sum(p.hits.boot for p in res.probes) > 0
    assert res.checks and res.checks_ok
    assert res.run.complete and res.run.exit_status == 0


def test_wrong_system_map_is_refused(debian_kernel, tmp_path, no_leaks):
    """A map from another build: refused before booting (the image's own code against the map), in one
    line naming the image's version."""
    vmlinuz, system_map = debian_kernel
    text = system_map.read_text()
    # shift every address by 16 bytes: still a plausible map, but not this kernel's
    lines = []
    for line in text.splitlines():
        addr, _, rest = line.partition(" ")
        try:
            lines.append(f"{int(addr, 16) + 16:08x} {rest}")
        except ValueError:
            lines.append(line)
    bad = tmp_path / "System.map"
    bad.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "gdbfault", "attach", "--qemu", "--kernel", str(vmlinuz),
                           # --live: the check is the same, and one boot is enough to be refused
                           "--system-map", str(bad), "--iterations", "5", "--no-trace", "--live", "-q"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "does not match the kernel image" in err[0] and "6.1.0-" in err[0]
