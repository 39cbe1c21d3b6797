"""x86_64 kernels without booting one: reading the architecture, and refusing what cannot run at once.

Made-up headers (fake_images.py) stand in for Debian's amd64 and 686 6.1
kernels; nothing is downloaded. Every refusal is one line, exit 2, before
any QEMU starts (Machine.start is made to fail the test if it is called).
The real amd64 kernel runs in test_real_kernel_x86_64.py.
"""
import shutil

import pytest

from fake_images import (AMD64_VERSION, fake_elf_kernel, fake_modern_bzimage, fake_system_map,
                         synthetic_header)
from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import REPO
from gdbfault.cli import main
from gdbfault.kernels.arch import emulator_runs, resolve_arch
from gdbfault.kernels.banner import ARRAY, POINTER, decode_banner
from gdbfault.kernels.boot import guest_memory_mb
from gdbfault.kernels.image import I386, X86_64, parse_image, read_image
from gdbfault.kernels.symbols import SymbolTable, map_rows, parse_system_map
from gdbfault.machine.qemu import Machine, emulator_target

NATIVE_MPROTECT = REPO / "qemu" / "workloads" / "build" / "x86_64" / "mprotect.elf"


@pytest.fixture
def no_boot(monkeypatch):
    """Any QEMU start fails the test: refusals come before anything boots."""
    def start(self, *a, **kw):
        raise AssertionError(f"QEMU was started: {self.command()}")
    monkeypatch.setattr(Machine, "start", start)


def _kernel(tmp_path, image_arch, map_arch, elf=False):
    img = tmp_path / ("vmlinux" if elf else "vmlinuz")
    img.write_bytes(fake_elf_kernel(image_arch) if elf else fake_modern_bzimage(image_arch))
    smap = tmp_path / "System.map"
    smap.write_text(fake_system_map(map_arch))
    return img, smap


def _refused(capsys, argv):
    """Run the CLI in this process; (exit code, its one stderr line)."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


# -- reading the architecture -------------------------------------------------------------

def test_bzimage_xloadflags_say_x86_64_and_old_protocols_are_i386():
    amd64, i686 = parse_image(fake_modern_bzimage("x86_64")), parse_image(fake_modern_bzimage("i386"))
    assert (amd64.arch, amd64.xloadflags, amd64.protocol_text) == (X86_64, 0x7F, "2.15")
    assert (i686.arch, i686.xloadflags) == (I386, 0x04)
    assert amd64.memory_floor_bytes() == 0x1000000 + 0x3F98000            # pref_address + init_size
    # before protocol 2.12 the field is still setup code: whatever is there, the image is i386
    old = bytearray(synthetic_header((2, 11), "3.0.0 (x@y) #1", relocatable=True))
    old[0x236] = 0x01
    assert parse_image(bytes(old)).arch == I386 and parse_image(bytes(old)).xloadflags is None
    assert parse_image(synthetic_header((2, 1))).arch == I386


def test_elf_class_and_machine_say_the_architecture():
    assert parse_image(fake_elf_kernel("x86_64")).arch == X86_64
    assert parse_image(fake_elf_kernel("i386")).arch == I386
    arm = bytearray(fake_elf_kernel("i386"))
    arm[18] = 40                                         # EM_ARM
    assert parse_image(bytes(arm)).arch is None


def test_a_system_map_says_its_width():
    assert SymbolTable("m", "System.map", parse_system_map(fake_system_map("x86_64"))).arch == X86_64
    assert SymbolTable("m", "System.map", parse_system_map(fake_system_map("i386"))).arch == I386
    # per-cpu symbols at 0 come first in an x86_64 map: the width is the kernel text's
    assert map_rows(fake_system_map("x86_64"))[0].address == 0


def test_which_emulator_runs_which_kernel():
    assert emulator_target("qemu-system-x86_64") == X86_64 and emulator_target("/usr/bin/qemu-system-i386") == I386
    assert emulator_runs(X86_64, X86_64) and emulator_runs(X86_64, I386) and emulator_runs(I386, I386)
    assert not emulator_runs(I386, X86_64) and not emulator_runs("aarch64", I386)
    arch = resolve_arch("vmlinuz", X86_64, workload_arch=I386)
    assert (arch.qemu, arch.cpu, arch.word_size, arch.ia32_emulation) == ("qemu-system-x86_64", "qemu64", 8, True)
    arch = resolve_arch("bzImage", I386)
    assert (arch.qemu, arch.cpu, arch.word_size, arch.ia32_emulation) == ("qemu-system-i386", "qemu32", 4, False)


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="qemu-system-x86_64 is not installed")
def test_an_emulator_under_another_name_is_asked(tmp_path):
    """A QEMU binary not called qemu-system-ARCH (a build of one's own) says what it emulates (QMP
    query-target; nothing boots)."""
    mine = tmp_path / "my-qemu"
    mine.symlink_to(shutil.which("qemu-system-x86_64"))
    assert emulator_target(str(mine)) == X86_64


def test_memory_below_what_the_image_needs_is_refused(tmp_path):
    img = tmp_path / "vmlinuz"
    img.write_bytes(fake_modern_bzimage("x86_64"))
    image = read_image(img)
    assert guest_memory_mb(None, image) == 256                      # by default: enough
    assert guest_memory_mb(128, image) == 128
    with pytest.raises(GdbfaultError, match=r"--memory 64 is too little for vmlinuz: it needs at least 96 MiB"):
        guest_memory_mb(64, image)
    assert guest_memory_mb(None, None, lab=True) == 64


def test_banner_pointer_is_eight_bytes_on_x86_64():
    text = b"Linux version 2.4.0 (x@y) #1\0"
    where = 0xFFFFFFFF82000000
    banner, form, pointer = decode_banner(where.to_bytes(8, "little"), lambda a: text, word_size=8)
    assert (banner, form, pointer) == ("Linux version 2.4.0 (x@y) #1", POINTER, where)
    assert decode_banner(text, lambda a: b"", word_size=8)[1] == ARRAY


# -- refused at once: one line, exit 2, no QEMU started ---------------------------------------

def test_x86_64_image_with_qemu_system_i386_is_refused(tmp_path, capsys, no_boot):
    img, smap = _kernel(tmp_path, "x86_64", "x86_64")
    code, err = _refused(capsys, ["attach", "--qemu", "--kernel", str(img), "--system-map", str(smap),
                                  "--qemu-binary", "qemu-system-i386", "-q"])
    assert code == 2
    assert "vmlinuz is an x86_64 kernel, which qemu-system-i386 (i386) cannot run" in err
    assert "use qemu-system-x86_64" in err


def test_x86_64_image_with_an_i386_map_is_refused(tmp_path, capsys, no_boot):
    img, smap = _kernel(tmp_path, "x86_64", "i386")
    code, err = _refused(capsys, ["attach", "--qemu", "--kernel", str(img), "--system-map", str(smap), "-q"])
    assert code == 2 and "is for an i386 kernel (8-hex-digit addresses) but vmlinuz is an x86_64 kernel" in err


@pytest.mark.parametrize("elf", [False, True], ids=["bzImage", "ELF"])
def test_i386_image_with_an_x86_64_map_is_refused(tmp_path, capsys, no_boot, elf):
    img, smap = _kernel(tmp_path, "i386", "x86_64", elf=elf)
    code, err = _refused(capsys, ["attach", "--qemu", "--kernel", str(img), "--system-map", str(smap), "-q"])
    assert code == 2 and "is for an x86_64 kernel (16-hex-digit addresses)" in err and "an i386 kernel" in err


def test_too_little_memory_is_refused(tmp_path, capsys, no_boot):
    img, smap = _kernel(tmp_path, "x86_64", "x86_64")
    code, err = _refused(capsys, ["attach", "--qemu", "--kernel", str(img), "--system-map", str(smap),
                                  "--memory", "64", "--backend", "plugin", "-q"])
    assert code == 2 and "--memory 64 is too little for vmlinuz" in err


def test_native_workload_on_an_i386_kernel_is_refused(capsys, no_boot):
    code, err = _refused(capsys, ["attach", "--qemu", "--workload-abi", "x86_64", "--iterations", "5", "-q"])
    assert code == 2 and "is an x86_64 program; the i386 kernel" in err and "kernel.elf" in err


@pytest.mark.skipif(not NATIVE_MPROTECT.is_file(), reason="the x86_64 workloads are not built")
def test_own_workload_abi_must_fit_the_option(tmp_path, capsys, no_boot):
    img, smap = _kernel(tmp_path, "x86_64", "x86_64")
    code, err = _refused(capsys, ["attach", "--qemu", "--kernel", str(img), "--system-map", str(smap),
                                  "--workload", str(NATIVE_MPROTECT), "--workload-abi", "i386", "-q"])
    assert code == 2 and "does not fit the workload" in err and "it is an x86_64 program" in err


def test_profile_and_compare_refuse_alike(tmp_path, capsys, no_boot):
    img, smap = _kernel(tmp_path, "x86_64", "x86_64")
    code, err = _refused(capsys, ["profile", "--qemu", "--kernel", str(img), "--system-map", str(smap),
                                  "--qemu-binary", "qemu-system-i386"])
    assert code == 2 and "cannot run" in err
    bad_map = tmp_path / "i386.map"
    bad_map.write_text(fake_system_map("i386"))
    code, err = _refused(capsys, ["compare", "--before", str(img), "--before-map", str(smap),
                                  "--after", str(img), "--after-map", str(bad_map), "--sequential"])
    # both runs are checked before either boots
    assert code == 2 and err.startswith("gdbfault: error: run 'after': System.map")
    assert "is for an i386 kernel" in err


def test_check_spec_takes_the_new_run_options(tmp_path):
    from gdbfault.analysis.check.spec import parse_spec, run_specs
    img, smap = _kernel(tmp_path, "x86_64", "x86_64")
    spec_file = tmp_path / "s.toml"
    spec_file.write_text(f'[defaults]\nkernel = "{img}"\nsystem_map = "{smap}"\nbackend = "plugin"\n'
                         '[runs.ia32]\nworkload_abi = "i386"\n[runs.native]\nworkload_abi = "x86_64"\n'
                         'qemu_binary = "qemu-system-x86_64"\nmemory = 512\n'
                         '[[expect]]\nname = "native is cheaper"\nleft = "native.path.user-signal.median"\n'
                         'op = "<"\nright = "ia32.path.user-signal.median"\n')
    specs = run_specs(parse_spec(spec_file.read_text(), spec_file), ["ia32", "native"])
    assert specs["ia32"].workload_abi == "i386" and specs["native"].workload_abi == "x86_64"
    assert (specs["native"].qemu, specs["native"].memory_mb) == ("qemu-system-x86_64", 512)


def test_version_string_of_the_fake_is_debians():
    assert parse_image(fake_modern_bzimage("x86_64")).version == AMD64_VERSION
