"""Kernel image headers made up for tests: what a real build's header holds, without the kernel."""
import struct

from gdbfault.kernels.image import (BOOT_FLAG_OFF, HDR_MAGIC_OFF, KVER_PTR_OFF, LOADFLAGS_OFF, PREF_ADDRESS_OFF,
                                    RELOCATABLE_OFF, SETUP_SECTS_OFF, VERSION_OFF, XLOADFLAGS_OFF)

AMD64_VERSION = "6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3"
I686_VERSION = "6.1.0-57-686 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3"


def synthetic_header(protocol, version="2.2.26 (root@lab) #1 Mon Jan 1 00:00:00 UTC 1999",
                     bzimage=True, relocatable=False, xloadflags=None, pref_address=None, init_size=None):
    """A minimal real-mode setup header, as a 2.x-era build would have (with `xloadflags`,
    `pref_address` and `init_size`: a modern one's)."""
    data = bytearray(4096)
    data[SETUP_SECTS_OFF] = 4
    struct.pack_into("<H", data, BOOT_FLAG_OFF, 0xAA55)
    data[HDR_MAGIC_OFF:HDR_MAGIC_OFF + 4] = b"HdrS"
    struct.pack_into("<H", data, VERSION_OFF, (protocol[0] << 8) | protocol[1])
    data[LOADFLAGS_OFF] = 1 if bzimage else 0
    text = version.encode() + b"\0"
    where = 0x400
    data[where:where + len(text)] = text
    struct.pack_into("<H", data, KVER_PTR_OFF, where - 0x200)
    if relocatable:
        data[RELOCATABLE_OFF] = 1
    if xloadflags is not None:
        struct.pack_into("<H", data, XLOADFLAGS_OFF, xloadflags)
    if pref_address is not None:
        struct.pack_into("<QI", data, PREF_ADDRESS_OFF, pref_address, init_size or 0)   # (init_size follows)
    return bytes(data)


def fake_modern_bzimage(arch):
    """The setup header of Debian's 6.1 kernel of `arch` ("x86_64": amd64, xloadflags 0x7f with
    XLF_KERNEL_64; "i386": 686, xloadflags 0x04), with their pref_address and init_size."""
    if arch == "x86_64":
        return synthetic_header((2, 15), AMD64_VERSION, relocatable=True, xloadflags=0x7F,
                                pref_address=0x1000000, init_size=0x3F98000)
    return synthetic_header((2, 15), I686_VERSION, relocatable=True, xloadflags=0x04,
                            pref_address=0x1000000, init_size=0x1018000)


def fake_system_map(arch):
    """A System.map of `arch`'s address width with the modern profile's symbols (Debian's addresses)."""
    if arch == "x86_64":
        return ("0000000000000000 D __per_cpu_start\nffffffff81000000 T _text\n"
                "ffffffff810878a0 t do_user_addr_fault\nffffffff810b6660 T force_sig_fault\n"
                "ffffffff810ca470 T search_exception_tables\nffffffff812d2af0 T handle_mm_fault\n"
                "ffffffff81a48560 T exc_page_fault\nffffffff81c00be0 T asm_exc_page_fault\n"
                "ffffffff82161900 D linux_banner\nffffffff82200000 T populate_rootfs\n")
    return ("c1000000 T _text\nc10567d0 t do_user_addr_fault\nc1077e40 T force_sig_fault\n"
            "c1096d30 T search_exception_tables\nc11d4e40 T handle_mm_fault\nc1918030 T exc_page_fault\n"
            "c1923670 T asm_exc_page_fault\nc1a20c80 D linux_banner\nc1b00000 T populate_rootfs\n")


def fake_elf_kernel(arch):
    """The first bytes of an ELF kernel (a vmlinux) of `arch`: identification only."""
    data = bytearray(64)
    data[:4] = b"\x7fELF"
    data[4] = 2 if arch == "x86_64" else 1                                  # EI_CLASS
    data[5] = 1                                                             # little endian
    struct.pack_into("<H", data, 18, 62 if arch == "x86_64" else 3)        # e_machine
    return bytes(data)
