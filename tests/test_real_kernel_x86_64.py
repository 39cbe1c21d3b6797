"""The kernel a developer runs today: Debian bookworm's amd64 6.1 kernel, under qemu-system-x86_64.

The kernel (vmlinuz from linux-image-6.1.0-N-amd64-unsigned) and its real
System.map (from -amd64-dbg) are fetched once by
`scripts/fetch-debian-kernel.sh --flavour amd64` into the kernel cache
(conftest.debian_amd64_kernel; GDBFAULT_NO_KERNEL_FETCH=1 skips instead of
fetching ~890 MB). gdbfault boots the vmlinux inside the bzImage through its
PVH entry (~6 s to init under icount instead of ~14 s), so each run here
costs a few seconds; the checks are combined per boot.

The guest's own summary is the truth: `force_sig_fault` == SIGSEGV, no user
fault reaches `search_exception_tables`, the same path costs from both
backends (GDB in a replay, the TCG plugin), and the kernel profile's kernel
+ user instructions account for the guest's cycles.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdbfault.model.paths import USER_SIGNAL
from gdbfault.model.result import as_result

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 20


def gdbfault(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "gdbfault", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def kernel_args(kernel):
    vmlinuz, system_map = kernel
    return ["--kernel", str(vmlinuz), "--system-map", str(system_map)]


def hits(run, role):
    return run.probe(role).hits.workload


def check_truth(run, iterations=ITERATIONS):
    """The guest's own summary against the counts and paths of an x86_64 mprotect run."""
    g = run.guest
    assert g["errors"] == 0 and g["iterations"] == iterations and g["sigsegv"] == iterations
    assert hits(run, "signal forced") == g["sigsegv"]          # every SIGSEGV through force_sig_fault, once
    assert run.user_fault_searches == 0                        # no user fault searches the exception table
    assert run.checks and run.checks_ok
    signal_paths = [p for p in run.paths if "signal forced" in p.events]
    assert [p.shape for p in signal_paths] == [USER_SIGNAL] and signal_paths[0].count == g["sigsegv"]
    assert run.kernel.arch == "x86_64" and run.tool.emulator == "qemu-system-x86_64" and run.mode.cpu == "qemu64"
    assert run.kernel.boot["boot_path"] == "pvh" and "nokaslr" in run.kernel.boot["command_line"]


def test_both_backends_count_exactly_and_agree_on_every_path_cost(debian_amd64_kernel, no_leaks, tmp_path):
    """The plugin backend, checked by the GDB backend (record, then count in the replay): the i386
    workload under the kernel's IA32 emulation. One command, both backends, one report."""
    out = tmp_path / "run.json"
    done = gdbfault("attach", "--qemu", *kernel_args(debian_amd64_kernel), "--iterations", str(ITERATIONS),
                    "--backend", "plugin", "--verify-with", "gdb", "-q", "-o", str(out))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("vmlinuz · x86_64 · qemu-system-x86_64 ") and " -cpu qemu64," in first
    assert any("i386 binary under the kernel's IA32 emulation" in line for line in done.stdout.splitlines()[:5])
    assert "cross-check with the gdb backend: counts, path shapes and costs agree ✓" in done.stdout
    run = as_result(json.loads(out.read_text()))
    check_truth(run)
    assert run.workload.abi == "i386" and run.workload.ia32_emulation
    assert run.trace.return_sites == [run.trace.return_sites[0]] and run.trace.return_sites[0] >= 0xffffffff80000000
    # the user-signal path costs the same in every fault after the first (the first one also
    # maps the stack page its signal frame lands on): deterministic, and the GDB backend's agree
    p = next(p for p in run.paths if p.shape == USER_SIGNAL)
    assert p.min == p.median == p.p95 and p.max > p.min


def test_ia32_and_native_entry_paths_with_check(debian_amd64_kernel, no_leaks, tmp_path):
    """The study as a regression check: the same kernel with the i386 workload (IA32 emulation) and
    the native x86_64 one, counted by the plugin; native signal delivery is cheaper."""
    vmlinuz, system_map = debian_amd64_kernel
    spec = tmp_path / "entry-paths.toml"
    spec.write_text(f'[defaults]\nkernel = "{vmlinuz}"\nsystem_map = "{system_map}"\nbackend = "plugin"\n'
                    f'iterations = {ITERATIONS}\n'
                    '[runs.ia32]\nworkload_abi = "i386"\n[runs.native]\nworkload_abi = "x86_64"\n'
                    '[[expect]]\nname = "native: every SIGSEGV through force_sig_fault"\n'
                    'left = "native.hits.signal forced"\nop = "=="\nright = "native.guest.sigsegv"\n'
                    '[[expect]]\nname = "ia32: every SIGSEGV through force_sig_fault"\n'
                    'left = "ia32.hits.signal forced"\nop = "=="\nright = "ia32.guest.sigsegv"\n'
                    '[[expect]]\nname = "no user fault searches the exception table"\n'
                    'left = "native.user_fault_searches"\nop = "=="\nright = "ia32.user_fault_searches"\n'
                    '[[expect]]\nname = "native signal delivery is cheaper than IA32 emulation\'s"\n'
                    'left = "native.path.user-signal.median"\nop = "<"\nright = "ia32.path.user-signal.median"\n')
    runs = tmp_path / "runs"
    done = gdbfault("check", str(spec), "--save-runs", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    native = as_result(json.loads((runs / "native.json").read_text()))
    ia32 = as_result(json.loads((runs / "ia32.json").read_text()))
    check_truth(native)
    check_truth(ia32)
    assert native.workload.abi == "x86_64" and not native.workload.ia32_emulation
    cost = {name: next(p for p in r.paths if p.shape == USER_SIGNAL).median for name, r in
            (("native", native), ("ia32", ia32))}
    assert cost["native"] < cost["ia32"]


def test_kernel_profile_accounts_for_the_guests_cycles(debian_amd64_kernel, no_leaks, tmp_path):
    out = tmp_path / "profile.json"
    done = gdbfault("profile", "--qemu", *kernel_args(debian_amd64_kernel), "--iterations", str(ITERATIONS),
                    "--workload-abi", "x86_64", "--chains", "--top", "10", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("kernel profile: vmlinuz · x86_64 · qemu-system-x86_64 -cpu qemu64")
    profile = json.loads(out.read_text())
    acc = profile["accounting"]
    # kernel + user = the guest's own rdtsc cycles + one per faulting block + one per block icount re-ran
    assert acc["agree"] and acc["exact"], acc
    assert acc["counted"] == acc["guest_cycles"] + acc["left_early_blocks"] + acc["inexact_blocks"]
    names = {f["symbol"] for f in profile["functions"]}
    assert {"exc_page_fault", "do_user_addr_fault", "force_sig_fault", "entry_SYSCALL_64"} <= names
    assert not any(f["symbol"].startswith("__ia32_sys_") for f in profile["functions"])   # native aliases first
    folded = dict(profile["folded"])
    assert any(s.startswith("entry_SYSCALL_64;") and "do_mprotect_pkey" in s for s in folded)
    assert any(s.startswith("asm_exc_page_fault;exc_page_fault;") for s in folded)


def test_live_count_filters_duplicates_with_64_bit_registers(debian_amd64_kernel, no_leaks):
    """--live: GDB's breakpoints in the running guest (no replay); counts still exact."""
    from gdbfault.runs.booted import run_qemu
    from gdbfault.model.spec import RunSpec
    vmlinuz, system_map = debian_amd64_kernel
    run = run_qemu(RunSpec(kernel=str(vmlinuz), system_map=str(system_map), iterations=10, replay=False,
                           workload_abi="x86_64", timeout_s=600))
    assert run.mode.replay is False and run.run.duplicate_filter is not False
    g = run.guest
    assert hits(run, "signal forced") == g["sigsegv"] == 10 and run.checks_ok
    assert run.kernel.banner.startswith("Linux version 6.1.0-") and "amd64" in run.kernel.banner


def test_attach_to_a_running_x86_64_qemu(debian_amd64_kernel, no_leaks, tmp_path):
    """`attach --pid` on a qemu-system-x86_64 gdbfault did not start; a map of another kernel is refused
    (one line, exit 2) and the guest runs on untouched."""
    from gdbfault.base.locations import workload_binary
    from gdbfault.kernels.guestroot import write_initramfs
    from gdbfault.kernels.image import extract_vmlinux, read_image
    from gdbfault.machine.qemu import Machine, MachineConfig
    vmlinuz, system_map = debian_amd64_kernel
    root = write_initramfs(workload_binary("mprotect", "x86_64"), tmp_path / "root.cpio")
    config = MachineConfig(kernel=extract_vmlinux(read_image(vmlinuz)), initrd=[root], qemu="qemu-system-x86_64",
                           cpu="qemu64", memory_mb=256, halted=False, icount=False,
                           append="console=ttyS0 panic=-1 nokaslr rdinit=/init sysctl.debug.exception-trace=0 "
                                  "iterations=100000000")
    with Machine(config) as m:
        m.start()
        deadline = time.monotonic() + 120
        while "GDBFAULT-START" not in m.serial_output():
            assert time.monotonic() < deadline and m.poll() is None, m.serial_output()[-300:]
            time.sleep(0.2)
        out = tmp_path / "attached.json"
        done = gdbfault("attach", "--pid", str(m.pid), *kernel_args(debian_amd64_kernel), "--duration", "3",
                        "-q", "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("vmlinuz · x86_64 · qemu-system-x86_64")
        run = as_result(json.loads(out.read_text()))
        sig, entry = hits(run, "signal forced"), hits(run, "fault entry")
        assert sig > 0 and abs(entry - sig) <= 2              # one fault per iteration on 6.1
        # a System.map of another kernel (shifted by 16 bytes): refused before connecting (the image's
        # calls do not land on its functions: kernels/identity.py), the guest untouched
        shifted = tmp_path / "System.map"
        shifted.write_text("".join(f"{int(a, 16) + 16:016x} {rest}" for a, _, rest in
                                   (line.partition(" ") for line in system_map.read_text().splitlines(True))))
        done = gdbfault("attach", "--pid", str(m.pid), "--kernel", str(vmlinuz), "--system-map", str(shifted),
                        "--duration", "1", "-q")
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and "does not match the kernel image vmlinuz" in err[0], err
        assert m.poll() is None                                 # left running


def test_compare_debian_686_and_amd64(debian_kernel, debian_amd64_kernel, no_leaks, tmp_path):
    """An i386 kernel against an x86_64 one on the same workload: each under its own emulator."""
    out = tmp_path / "cmp.json"
    done = gdbfault("compare", "--before", str(debian_kernel[0]), "--before-map", str(debian_kernel[1]),
                    "--after", str(debian_amd64_kernel[0]), "--after-map", str(debian_amd64_kernel[1]),
                    "--iterations", str(ITERATIONS), "--backend", "plugin", "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("before (6.1.0-") and "-686): vmlinuz · i386 · qemu-system-i386" in lines[0]
    assert lines[1].startswith("after (6.1.0-") and "-amd64): vmlinuz · x86_64 · qemu-system-x86_64" in lines[1]
    cmp = json.loads(out.read_text())
    for side in ("before", "after"):
        run = as_result(cmp[side])
        assert hits(run, "signal forced") == run.guest["sigsegv"] == ITERATIONS and run.checks_ok
