"""The files a user names, in and out, refused in one line (exit 2) before anything boots.

Inputs are bounded (base/userfiles.py): a directory, a device, a FIFO or a
file larger than its kind may be is refused before a byte is read — before,
`gdbfault report /dev/zero` grew to 24 GB and ignored SIGTERM. Outputs are
tried before the work — before, `profile`/`check` ran first and then died
with a traceback. A kernel image cut short, or a System.map of another
build, is refused before booting (kernels/image.py, kernels/identity.py).
Options `attach --port/--socket/--pid` would not use are refused before it
connects. Each case runs the real command line; none may boot anything.
"""
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KERNEL_BUILD, REPO

SPEC = REPO / "qemu" / "checks" / "seed-patch.toml"
OLDBOOT = KERNEL_BUILD / "oldboot"
DATA = Path(__file__).resolve().parent / "data"


def gdbfault(*args, prefix=(), cwd=None, timeout=60):
    """The command line, timed: (CompletedProcess, seconds)."""
    t0 = time.monotonic()
    done = subprocess.run([*prefix, sys.executable, "-m", "gdbfault", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return done, time.monotonic() - t0


def refused(done, *needles):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("gdbfault: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("odd")
    fifo = base / "fifo"
    os.mkfifo(fifo)
    sparse = base / "sparse-2g"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)                  # 2 GB, no disk used
    return {"fifo": fifo, "sparse": sparse, "dir": base}


INPUTS = [
    (("report", "/dev/zero"), ("/dev/zero is a character device, not a run file",)),
    (("report", "{sparse}"), ("2.0 GB: too large for a run file (at most 256.0 MB)",)),
    (("report", "{dir}"), ("is a directory, not a run file",)),
    (("check", "/dev/zero"), ("is a character device, not a check spec",)),
    (("check", SPEC, "--use", "vanilla=/dev/zero"), ("not a run file",)),
    (("attach", "--qemu", "--profile", "/dev/zero"), ("not a profile file",)),
    (("attach", "--qemu", "--kernel", "/dev/zero"), ("not a kernel file",)),
    (("attach", "--qemu", "--kernel", "{sparse}"), ("too large for a kernel file (at most 512.0 MB)",)),
    (("attach", "--qemu", "--kernel", OLDBOOT / "bzImage", "--system-map", "{fifo}"),
     ("is a FIFO (named pipe), not a System.map",)),
    (("attach", "--qemu", "--iterations", 10, "--live-patch", "/dev/zero"), ("not a live patch file",)),
    (("attach", "--qemu", "--workload", "{fifo}"), ("not a workload",)),
]


@pytest.mark.parametrize("args, needles", INPUTS, ids=[" ".join(map(str, a)) for a, _ in INPUTS])
def test_an_input_that_is_no_bounded_file_is_refused_at_once(lab_built, odd_files, args, needles):
    args = [str(a).format(**odd_files) for a in args]
    done, seconds = gdbfault(*args, timeout=30)
    refused(done, *needles)
    assert seconds < 15


def _read_only(folder):
    """A command prefix under which `folder` is read-only, for root too (a read-only bind mount in
    a mount namespace of its own); for others a 0555 folder is."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("root without unshare -m: no read-only folder to test with")
    return ("unshare", "-m", "sh", "-c", f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"', "sh")


OUTPUTS = [
    (("profile", "--qemu", "-o", "{ro}/p.json"), "--output"),
    (("profile", "--qemu", "--plot", "{ro}/p.png"), "--plot"),
    (("attach", "--qemu", "-o", "{ro}/run.json"), "--output"),
    (("compare", "-o", "{ro}/cmp.json"), "--output"),
    (("check", SPEC, "--junit", "{ro}/j.xml"), "--junit"),
    (("check", SPEC, "--save-runs", "{ro}/runs"), "--save-runs"),
]


@pytest.mark.parametrize("args, flag", OUTPUTS, ids=[" ".join(map(str, a)) for a, _ in OUTPUTS])
def test_an_output_in_a_read_only_folder_is_refused_before_the_work(lab_built, tmp_path, args, flag):
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = _read_only(ro)
    try:
        done, seconds = gdbfault(*[str(a).format(ro=ro) for a in args], prefix=prefix)
        refused(done, flag, "not writable")
        assert seconds < 15                           # nothing booted
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []                   # no .tmp, no half-made folder


@pytest.mark.parametrize("args, message", [
    (("profile", "--qemu", "-o", "{tmp}"), "is a directory"),
    (("check", SPEC, "--junit", "{tmp}"), "is a directory"),
    (("check", SPEC, "--junit", "{tmp}/no/such/j.xml"), "does not exist"),
    (("check", SPEC, "--save-runs", "{tmp}/file"), "is not a folder"),
])
def test_an_output_that_is_a_directory_or_in_no_folder_is_refused(lab_built, tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    done, seconds = gdbfault(*[str(a).format(tmp=tmp_path) for a in args])
    refused(done, message)
    assert seconds < 15 and not list(tmp_path.glob("**/*.tmp"))


@pytest.mark.parametrize("length", [20000, 3000])
def test_a_kernel_image_cut_short_is_refused_before_booting(lab_built, tmp_path, length):
    """head -c 20000 bzImage booted to "powered off before init" (exit 3); a 3000-byte cut ended
    "(exited-normally)", exit 2, after booting."""
    whole = (OLDBOOT / "bzImage").read_bytes()
    setup_sects, syssize = whole[0x1F1], struct.unpack_from("<I", whole, 0x1F4)[0]
    needed = (setup_sects + 1) * 512 + syssize * 16           # what the header says the image holds
    assert len(whole) >= needed > length
    cut = tmp_path / "bzImage"
    cut.write_bytes(whole[:length])
    done, seconds = gdbfault("attach", "--qemu", "--kernel", cut, "--system-map", OLDBOOT / "System.map",
                             "--iterations", 5)
    refused(done, "is cut short", f"setup_sects {setup_sects}, syssize {syssize}", f"{needed:,} bytes",
            f"the file has {length:,}")
    assert seconds < 15


def test_an_elf_kernel_cut_short_is_refused(lab_built, tmp_path):
    from gdbfault.base.errors import GdbfaultError
    from gdbfault.kernels.image import read_image
    cut = tmp_path / "kernel.elf"
    cut.write_bytes((KERNEL_BUILD / "vanilla" / "kernel.elf").read_bytes()[:20000])
    with pytest.raises(GdbfaultError, match="cut short: its ELF headers and segments say"):
        read_image(cut)


def test_a_system_map_of_another_build_is_refused_before_booting(lab_built, tmp_path):
    """oldboot's image with oldboot-24's map: both put linux_banner at 0xc01090c4, so the banner
    check passed, and the run went on to wrong counts and a wrong hint."""
    done, seconds = gdbfault("attach", "--qemu", "--kernel", OLDBOOT / "bzImage", "--system-map",
                             KERNEL_BUILD / "oldboot-24" / "System.map", "--iterations", 200)
    line = refused(done, "oldboot-24/System.map does not match the kernel image bzImage (2.2.26-lab",
                   "#1 oldboot): it is the map of another build")
    calls, fit = map(int, re.search(r"of the (\d+) functions the image's code calls, (\d+) start where", line).groups())
    assert calls >= 50 and fit < calls // 2, line        # with its own map, every call lands on a function
    assert "force_sig (0x" in line
    assert "(the image beside it, " in line and "2.4.37-lab" in line and "#1 oldboot-24)" in line   # both named
    assert seconds < 15
    named = tmp_path / "System.map-2.4.37-lab"                 # as /boot names them
    shutil.copy(KERNEL_BUILD / "oldboot-24" / "System.map", named)
    done, _ = gdbfault("attach", "--qemu", "--kernel", OLDBOOT / "bzImage", "--system-map", named)
    refused(done, "(its file name says 2.4.37-lab)")


def test_the_map_check_reads_a_gzip_packed_kernel_as_2x_images_carry_it(lab_built, tmp_path):
    """A real 2.x bzImage carries its kernel gzip-compressed after a decompressor: the check
    unpacks it (the oldboot fixture's kernel, repacked that way, gives the same verdicts)."""
    from gdbfault.kernels.identity import image_code, map_fit
    from gdbfault.kernels.symbols import symbol_rows
    flat = (OLDBOOT / "bzImage").read_bytes()
    setup = (flat[0x1F1] + 1) * 512
    packed = bytearray(flat[:setup]) + b"\x90" * 512 + gzip.compress(flat[setup:])
    packed[0x1F4:0x1F8] = struct.pack("<I", (len(packed) - setup + 15) // 16)
    image = tmp_path / "bzImage"
    image.write_bytes(bytes(packed))
    code = image_code(image)
    assert "gzip-compressed" in code.how
    fits = {build: map_fit(symbol_rows(image, KERNEL_BUILD / build / "System.map")[0], code)[:2]
            for build in ("oldboot", "oldboot-24")}
    calls, own = fits["oldboot"]
    assert calls >= 50 and own == calls                     # its own map: every call lands on a function
    assert fits["oldboot-24"][0] == calls and fits["oldboot-24"][1] < calls // 2


@pytest.mark.parametrize("option", [
    ("--iterations", "5"), ("--workload", "demand"), ("--backend", "plugin"), ("--no-trace",),
    ("--cost-sample", "2"), ("--timeout", "5"), ("--verify-with", "gdb"), ("--plot", "p.png"),
    ("--patch-at", "3"), ("--append", "x=1"),
], ids=lambda o: o[0])
def test_attach_to_a_running_qemu_refuses_options_it_does_not_use(tmp_path, option):
    done, seconds = gdbfault("attach", "--socket", tmp_path / "no.sock", "--duration", 1, *option, cwd=tmp_path)
    refused(done, option[0])
    assert seconds < 10


def test_verify_with_gdb_without_the_plugin_is_refused_before_anything_starts(monkeypatch, capsys):
    from gdbfault.cli import main
    from gdbfault.machine import gdbmi, plugins, qemu
    def unavailable(name="faultcount", plugin_dir=None):
        raise plugins.PluginUnavailable("the QEMU plugin backend is unavailable: not built (test)")
    def never(*args, **kwargs):
        raise AssertionError("QEMU or GDB was started")
    monkeypatch.setattr(plugins, "plugin_library", unavailable)
    monkeypatch.setattr(qemu.Machine, "start", never)
    monkeypatch.setattr(gdbmi.Debugger, "__init__", never)
    assert main(["attach", "--qemu", "--backend", "plugin", "--verify-with", "gdb", "--iterations", "5"]) == 2
    assert "plugin backend is unavailable" in capsys.readouterr().err


def test_report_of_a_partial_run_gives_no_per_iteration_figures_the_guest_did_not_back(tmp_path):
    """A run stopped early had divided its hits by the planned iterations."""
    from gdbfault.model.result import RunResult
    from gdbfault.probing.measure import Measured, ProbeCount, fill_result
    from gdbfault.views.report import render
    run = json.loads((DATA / "check-vanilla-mprotect-1000.json").read_text())
    run["guest"], run["run"]["complete"] = None, False
    saved = tmp_path / "partial.json"
    saved.write_text(json.dumps(run))
    done, _ = gdbfault("report", saved)
    assert done.returncode == 0, done.stderr
    assert "partial run: the guest never said how many of the 1000 iterations it ran" in done.stdout
    assert " 1.00" not in done.stdout and " 2.00" not in done.stdout
    result = RunResult.from_dict(run)
    address = result.probes[0].address
    fill_result(result, Measured(counts={address: ProbeCount(0, 500)}, serial="GDBFAULT-START {}\n"), partial=True)
    assert result.probes[0].per_iteration is None
    assert "× 1000" in render(result)                     # what was asked, said as such


def test_a_guest_count_that_disagrees_with_iterations_is_refused_or_reported_as_the_guests(lab_built):
    done, _ = gdbfault("attach", "--qemu", "--iterations", 200, "--append", "iterations=5")
    refused(done, "--append iterations=5 disagrees with --iterations 200")
    from gdbfault.model.result import RunResult
    from gdbfault.views.report import render
    run = RunResult.from_dict(json.loads((DATA / "check-vanilla-mprotect-1000.json").read_text()))
    run.workload.iterations = 200
    assert "× 1000 (the guest's own count; 200 asked)" in render(run)
