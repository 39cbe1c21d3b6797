"""Unit tests for bringing your own kernel: image headers, boot paths, guest roots,
the banner check and the 2.0 / 2.2 / modern profile split. Nothing is booted here."""
import shutil
import struct

import pytest

from fake_images import synthetic_header
from gdbfault.kernels.image import GRUB, QEMU_KERNEL, boot_plan, parse_image, read_image
from gdbfault.base.errors import GdbfaultError
from gdbfault.kernels.guestroot import write_initramfs
from gdbfault.kernels.profiles import load_profile, pick_profile
from gdbfault.kernels.banner import banner_matches
from gdbfault.kernels.boot import guest_memory_mb, prepare_boot, root_kind
from gdbfault.kernels.symbols import SymbolTable

V22 = "2.2.26 (root@lab) #1 Mon Jan 1 00:00:00 UTC 1999"


def test_protocol_201_is_detected_and_booted_through_grub(tmp_path):
    img = tmp_path / "bzImage"
    img.write_bytes(synthetic_header((2, 1), V22))
    image = read_image(img)
    assert image.format == "bzImage" and image.protocol == (2, 1) and image.protocol_text == "2.01"
    assert image.version == V22 and image.release == "2.2.26"
    plan = boot_plan(image)
    assert plan.path == GRUB and "2.02" in plan.reason and not plan.kaslr_possible


@pytest.mark.parametrize("proto", [(2, 2), (2, 3), (2, 15)])
def test_protocol_202_and_later_use_qemu_kernel(proto):
    image = parse_image(synthetic_header(proto, "6.1.0-50-686 (x@y) #1 SMP", relocatable=True))
    plan = boot_plan(image)
    assert plan.path == QEMU_KERNEL
    # relocatable_kernel only means something from protocol 2.05 on
    assert plan.kaslr_possible == (proto >= (2, 5))


def test_old_images_without_setup_header_and_zimage():
    data = bytearray(synthetic_header((2, 0), "2.0.40 (root@lab) #1", bzimage=False))
    image = parse_image(bytes(data))
    assert image.format == "zImage" and boot_plan(image).path == GRUB
    data[0x202:0x206] = b"\0\0\0\0"            # a 1.x zImage: boot sector, no HdrS
    image = parse_image(bytes(data))
    assert image.protocol is None and boot_plan(image).path == GRUB


def test_elf_and_garbage():
    elf = b"\x7fELF" + bytes(60) + struct.pack("<III", 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    image = parse_image(elf)
    assert image.format == "elf" and image.multiboot and boot_plan(image).path == QEMU_KERNEL
    with pytest.raises(GdbfaultError, match="not a kernel image"):
        boot_plan(parse_image(bytes(4096)))


def _read_newc(data):
    """name -> (mode, rdev, body) from a newc archive (an independent reader)."""
    out, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701"
        f = [int(data[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = data[off + 110:off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        body = data[off:off + filesize]
        off = (off + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (f[1], (f[9], f[10]), body)


def test_initramfs_has_init_and_console(tmp_path):
    init = tmp_path / "w.elf"
    init.write_bytes(b"\x7fELF" + b"x" * 1001)
    cpio = write_initramfs(init, tmp_path / "root.cpio").read_bytes()
    assert len(cpio) % 512 == 0
    entries = _read_newc(cpio)
    assert entries["init"][0] == 0o100755 and entries["init"][2] == init.read_bytes()
    assert entries["dev/console"][0] == 0o020600 and entries["dev/console"][1] == (5, 1)
    assert entries["dev"][0] & 0o170000 == 0o040000 and "proc" in entries


def test_command_line_and_root_for_a_modern_kernel(tmp_path):
    img = tmp_path / "vmlinuz"
    img.write_bytes(synthetic_header((2, 15), "6.1.0-50-686 (x@y) #1 SMP", relocatable=True))
    init = tmp_path / "w.elf"
    init.write_bytes(b"\x7fELF")
    syms = SymbolTable(tmp_path / "System.map", "System.map", {"unpack_to_rootfs": 0xc1000000})
    memory = guest_memory_mb(None, read_image(img))      # (what resolve_run decides)
    boot = prepare_boot(img, syms, init, "iterations=5", memory)
    # the image, under a fixed name in the guest folder (its name is guest input: machine/config.py)
    assert boot.kernel.parent == boot.work_dir and boot.kernel.name == "bzImage" and boot.kernel.samefile(img)
    shutil.rmtree(boot.work_dir)          # (the guest's root; a run removes it at its end)
    words = boot.append.split()
    # a 5.8+ kernel is also told not to log pid 1's SIGSEGVs
    assert {"console=ttyS0", "nokaslr", "panic=-1", "iterations=5", "sysctl.debug.exception-trace=0"} <= set(words)
    assert boot.memory_mb >= 128 and boot.initrd[0].name == "root.cpio"
    # the user's own words win
    boot = prepare_boot(img, syms, init, "console=ttyS1 kaslr", 64)
    shutil.rmtree(boot.work_dir)
    assert "console=ttyS0" not in boot.append and "nokaslr" not in boot.append


def test_machine_options_of_old_and_modern_kernels(tmp_path):
    """Old kernels (an ext2 initrd, or GRUB) boot under -icount shift=7 with the RTC on the
    virtual clock from a fixed date (no host-clock reads to record, the same boot every run);
    a modern kernel keeps shift=0 and QEMU's own RTC."""
    from pathlib import Path
    from gdbfault.kernels.boot import OLD_KERNEL_RTC
    from gdbfault.kernels.grub import grub_available
    from gdbfault.kernels.symbols import load_symbols
    build = Path(__file__).resolve().parent.parent / "qemu" / "kernel" / "build"
    init = tmp_path / "w.elf"
    init.write_bytes(b"\x7fELF")
    img = tmp_path / "vmlinuz"
    img.write_bytes(synthetic_header((2, 15), "6.1.0-50-686 (x@y) #1 SMP", relocatable=True))
    modern = prepare_boot(img, SymbolTable(tmp_path / "m", "System.map", {"unpack_to_rootfs": 1}), init, "", 64)
    shutil.rmtree(modern.work_dir)
    assert modern.rr_icount == "shift=0,sleep=off" and "-rtc" not in modern.extra_args
    for variant, icount in (("oldboot-24", "shift=7,sleep=off"), ("oldboot", "shift=7")):
        image, system_map = build / variant / "bzImage", build / variant / "System.map"
        if not image.is_file() or not shutil.which("genext2fs") or (variant == "oldboot" and not grub_available()):
            pytest.skip("the old-kernel fixture (or genext2fs, GRUB) is not there")
        boot = prepare_boot(image, load_symbols(image, system_map), init, "iterations=3", 64)
        shutil.rmtree(boot.work_dir)
        assert boot.rr_icount == icount and boot.describe()["icount"] == icount
        at = boot.extra_args.index("-rtc")
        assert boot.extra_args[at:at + 2] == OLD_KERNEL_RTC == ["-rtc", "base=2000-01-01T00:00:00,clock=vm"]


def test_old_kernels_get_an_ext2_initrd():
    image = parse_image(synthetic_header((2, 1), V22))
    assert root_kind(image, SymbolTable("m", "System.map", {"do_page_fault": 1})) == "ext2"
    image = parse_image(synthetic_header((2, 15), "6.1.0 (x@y) #1"))
    assert root_kind(image, SymbolTable("m", "System.map", {"populate_rootfs": 1})) == "initramfs"


def test_banner_check():
    version = "6.1.0-50-686 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)"
    banner = ("Linux version 6.1.0-50-686 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) "
              "12.2.0, GNU ld 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)")
    assert banner_matches(banner, version)
    assert not banner_matches(banner, version.replace("6.1.176-1", "6.1.170-3"))
    assert not banner_matches(banner, "6.1.0-47-686 (x) #1 SMP")
    assert not banner_matches("\x00garbage", version)
    assert banner_matches("Linux version 2.2.26 (root@lab) (gcc 2.7.2.3) #1 Mon Jan 1 00:00:00 UTC 1999",
                          V22)


def test_profiles_split_2_0_and_2_2():
    t = lambda names: SymbolTable("m", "System.map", {n: 0xc0100000 + i for i, n in enumerate(names)})
    assert pick_profile(t(["do_page_fault", "search_exception_table", "force_sig",
                           "handle_mm_fault"])).name == "linux-2.2"
    assert pick_profile(t(["do_page_fault", "force_sig", "do_wp_page"])).name == "linux-2.0"
    assert pick_profile(t(["exc_page_fault", "search_exception_tables",
                           "force_sig_fault"])).name == "linux-modern"
    assert load_profile("linux-2.x").name == "linux-2.2"       # the old name still loads


# -- linux_banner in both forms, profiles per era -------------------------------------------

BANNER_22 = b"Linux version 2.2.26 (root@lab) (gcc version 2.7.2.3) #1 Mon Jan 1 1999\n\0"


def test_banner_array_form_is_read_in_place():
    from gdbfault.kernels.banner import decode_banner
    text, form, pointer = decode_banner(BANNER_22, lambda a: pytest.fail("no pointer to follow"))
    assert text.startswith("Linux version 2.2.26") and form == "const char []" and pointer is None


def test_banner_pointer_form_is_followed():
    from gdbfault.kernels.banner import decode_banner
    memory = {0xC01F3A40: BANNER_22}
    at_symbol = struct.pack("<I", 0xC01F3A40) + b"\x00\x01garbage"
    text, form, pointer = decode_banner(at_symbol, memory.__getitem__)
    assert text.startswith("Linux version 2.2.26") and form == "const char *" and pointer == 0xC01F3A40
    assert banner_matches(text, V22.replace("(root@lab) #1 Mon Jan 1 00:00:00 UTC 1999",
                                            "(root@lab) #1 Mon Jan 1 1999"))
    # a pointer to something else is no banner: the check then refuses the map
    text, form, _ = decode_banner(at_symbol, lambda a: b"\x90\x90\x90\x90\0")
    assert not banner_matches(text, V22)


def _map(names):
    return SymbolTable("m", "System.map", {n: 0xc0100000 + 16 * i for i, n in enumerate(names)})


ERA_MAPS = {
    # release: (symbols a kernel of that era has, profile, signal symbol)
    "2.0.40": (["do_page_fault", "force_sig", "do_wp_page", "linux_banner"], "linux-2.0", "force_sig"),
    "2.2.26": (["do_page_fault", "search_exception_table", "force_sig", "handle_mm_fault"],
               "linux-2.2", "force_sig"),
    "2.4.37": (["do_page_fault", "search_exception_table", "force_sig", "force_sig_info",
                "handle_mm_fault"], "linux-2.4", "force_sig_info"),
    "2.6.32": (["do_page_fault", "search_exception_tables", "force_sig", "force_sig_info",
                "handle_mm_fault"], "linux-2.6", "force_sig_info"),
    "4.9.0": (["do_page_fault", "__do_page_fault", "search_exception_tables", "force_sig_info",
               "handle_mm_fault"], "linux-2.6", "force_sig_info"),
    "6.1.0-50-686": (["exc_page_fault", "do_user_addr_fault", "search_exception_tables",
                      "force_sig_fault", "force_sig_info", "handle_mm_fault"], "linux-modern",
                     "force_sig_fault"),
}


@pytest.mark.parametrize("release", list(ERA_MAPS))
def test_profile_per_era_by_release_and_by_symbols(release):
    from gdbfault.kernels.profiles import resolve_probes
    from gdbfault.model.roles import SIGNAL
    names, expected, signal = ERA_MAPS[release]
    syms = _map(names)
    by_release = pick_profile(syms, release)
    assert by_release.name == expected and release in by_release.reason
    assert pick_profile(syms).name == expected               # the symbols alone agree
    probes = {p.role: p.symbol for p in resolve_probes(by_release, syms)}
    assert probes[SIGNAL] == signal


def test_2_0_has_no_exception_search_and_says_so():
    from gdbfault.kernels.profiles import resolve_probes
    from gdbfault.model.roles import SEARCH
    syms = _map(ERA_MAPS["2.0.40"][0])
    prof = pick_profile(syms, "2.0.40")
    assert SEARCH not in {p.role for p in resolve_probes(prof, syms)}
    assert any("no exception table" in n for n in prof.notes)


def test_release_whose_symbols_do_not_fit_falls_back_and_says_why():
    syms = _map(ERA_MAPS["2.2.26"][0])
    prof = pick_profile(syms, "6.1.0")           # a release string that lies about the map
    assert prof.name == "linux-2.2"
    assert "6.1.0" in prof.reason and "lacks search_exception_tables" in prof.reason


def test_role_alternatives_and_the_report_hint():
    from gdbfault.kernels.profiles import role_alternatives
    from gdbfault.model.roles import SIGNAL
    from gdbfault.views.report import render
    syms = _map(ERA_MAPS["2.4.37"][0])
    assert role_alternatives(SIGNAL, syms, "force_sig") == ["force_sig_info"]
    result = {"schema": "gdbfault.run/1", "tool": {"gdbfault": "x", "qemu": "7.2", "gdb": "13.1"},
              "kernel": {"path": "bzImage", "lab": False, "profile": "linux-2.2", "model": "linux-2.2",
                         "profile_reason": "chosen with --profile", "profile_notes": []},
              "workload": {"name": "mprotect", "iterations": 5, "command_line": ""},
              "mode": {"backend": "gdb", "icount": True},
              "probes": [{"role": SIGNAL, "symbol": "force_sig", "address": 0xc0100020,
                          "hits": {"boot": 0, "workload": 0}, "total": 0, "duplicates": 0,
                          "per_iteration": 0.0, "alternatives": ["force_sig_info"]}],
              "guest": {"iterations": 5, "sigsegv": 5}, "paths": [],
              "checks": [{"role": SIGNAL, "symbol": "force_sig", "expected": 5, "counted": 0, "ok": False}],
              "run": {"complete": True, "wall_s": 1.0, "hits": 0, "exit": "guest powered off cleanly"}}
    text = render(result, "table")
    assert "profile linux-2.2: chosen with --profile" in text
    assert "also has force_sig_info: try --probe 'signal forced=force_sig_info'" in text


def test_truth_model_of_the_packaged_lab_kernel():
    from gdbfault.kernels.boot import truth_model
    image = lambda build: parse_image(synthetic_header((2, 1), f"2.2.26-lab (gdbfault@lab) "
                                                               f"(gdbfault lab kernel) #1 {build}"))
    assert truth_model("lab", image("oldboot")) == "lab-vanilla"
    assert truth_model("lab", image("oldboot-patched")) == "lab-patched"
    assert truth_model("linux-2.2", image("oldboot")) == "linux-2.2"
    assert truth_model("lab", parse_image(synthetic_header((2, 1), V22))) == "lab"
