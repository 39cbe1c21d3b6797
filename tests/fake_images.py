"""Kernel image headers made up for tests: what a real build's header holds, without the kernel."""
import struct

from gdbfault.kernels.image import (BOOT_FLAG_OFF, HDR_MAGIC_OFF, KVER_PTR_OFF, LOADFLAGS_OFF, RELOCATABLE_OFF,
                                    SETUP_SECTS_OFF, VERSION_OFF)


def synthetic_header(protocol, version="2.2.26 (root@lab) #1 Mon Jan 1 00:00:00 UTC 1999",
                     bzimage=True, relocatable=False):
    """A minimal real-mode setup header, as a 2.x-era build would have."""
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
    return bytes(data)
