"""What kind of kernel image the user brought, and how QEMU can boot it.

A kernel image is one of:
- an ELF file (the lab kernel, a vmlinux with a multiboot header or a PVH
  note): QEMU's `-kernel` loads it directly;
- a bzImage/zImage with a real-mode setup header (`HdrS` at 0x202, boot
  protocol version at 0x206, the kernel_version string pointer at 0x20e);
- a zImage older than the setup header (Linux 1.x): no `HdrS` at all.

Boot paths (`BootPlan.path`):
- "qemu-kernel": `-kernel IMAGE -initrd ROOT -append CMDLINE`. Used for ELF
  images and for boot protocol >= 2.02.
- "grub": QEMU 7.2's `-kernel` loader corrupts images older than protocol
  2.02 (it writes initrd_addr_max at 0x22c, still setup code there: a 2.2
  image then hangs in real mode with no output),
  so those are booted by a real bootloader instead: GRUB 2 (Debian's
  grub-pc-bin), set up by `gdbfault.kernels.grub`: a GRUB core image with an
  embedded config, loaded by QEMU's `-kernel` through GRUB's `lnxboot.img`
  (a protocol-2.05 Linux boot stub), reads the kernel and the initrd from a
  tar archive attached as an IDE disk (through QEMU's blkreplay driver, so
  record/replay works). GRUB's `linux16`/`initrd16` implement every old
  protocol.

Also read here: whether the image may randomise its own base address (KASLR:
protocol >= 2.05 with the relocatable_kernel flag), which decides whether
`nokaslr` is appended.
"""
import struct
from dataclasses import dataclass
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import input_file, open_input

__all__ = ["KernelImage", "BootPlan", "read_image", "parse_image", "image_length", "boot_plan", "QEMU_KERNEL", "GRUB"]

QEMU_KERNEL = "qemu-kernel"
GRUB = "grub"

HDR_MAGIC_OFF = 0x202        # "HdrS"
VERSION_OFF = 0x206          # u16 boot protocol version
KVER_PTR_OFF = 0x20E         # u16: kernel_version string at this + 0x200
SETUP_SECTS_OFF = 0x1F1      # u8
SYSSIZE_OFF = 0x1F4          # u32 (u16 before protocol 2.04): the protected-mode part, in 16-byte units
LOADFLAGS_OFF = 0x211        # u8, bit 0 LOADED_HIGH (bzImage)
RELOCATABLE_OFF = 0x234      # u8 relocatable_kernel (protocol >= 2.05)
BOOT_FLAG_OFF = 0x1FE        # u16 0xAA55
MULTIBOOT_MAGIC = 0x1BADB002


@dataclass
class KernelImage:
    path: Path
    format: str                 # "elf", "bzImage", "zImage", "zImage (no setup header)", "unknown"
    protocol: tuple = None      # (major, minor) of the boot protocol, None if no HdrS
    version: str = None         # the image's kernel_version string, if it has one
    multiboot: bool = False
    relocatable: bool = False   # may apply KASLR (protocol >= 2.05 and relocatable_kernel)

    @property
    def protocol_text(self):
        return f"{self.protocol[0]}.{self.protocol[1]:02d}" if self.protocol else "none"

    @property
    def release(self):
        """The kernel release (`6.1.0-50-686`, `2.2.26`): the version string's first word."""
        return self.version.split()[0] if self.version else None


@dataclass
class BootPlan:
    path: str                   # QEMU_KERNEL or GRUB
    reason: str
    kaslr_possible: bool


def _multiboot_header(data):
    """A multiboot header in the first 8 KiB (magic + flags + checksum == 0)."""
    for off in range(0, min(len(data), 8192) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return True
    return False


def parse_image(data, path="<image>"):
    """A KernelImage from the first bytes of a kernel file (at least 64 KiB is plenty)."""
    path = Path(path)
    if data[:4] == b"\x7fELF":
        return KernelImage(path, "elf", multiboot=_multiboot_header(data))
    if len(data) < 0x210 or struct.unpack_from("<H", data, BOOT_FLAG_OFF)[0] != 0xAA55:
        if _multiboot_header(data):
            return KernelImage(path, "multiboot", multiboot=True)
        return KernelImage(path, "unknown")
    if data[HDR_MAGIC_OFF:HDR_MAGIC_OFF + 4] != b"HdrS":
        return KernelImage(path, "zImage (no setup header)")
    raw = struct.unpack_from("<H", data, VERSION_OFF)[0]
    protocol = (raw >> 8, raw & 0xFF)
    loadflags = data[LOADFLAGS_OFF] if len(data) > LOADFLAGS_OFF else 0
    fmt = "bzImage" if loadflags & 1 else "zImage"
    version = None
    ptr = struct.unpack_from("<H", data, KVER_PTR_OFF)[0]
    if ptr and raw >= 0x0200 and 0x200 + ptr < len(data):
        raw_text = data[0x200 + ptr:0x200 + ptr + 256].split(b"\0", 1)[0]
        text = raw_text.decode("ascii", "replace").strip()
        if text and text[0].isdigit():
            version = text
    relocatable = raw >= 0x0205 and len(data) > RELOCATABLE_OFF and data[RELOCATABLE_OFF] != 0
    return KernelImage(path, fmt, protocol, version, relocatable=relocatable)


def read_image(path):
    """Read and parse a kernel image file's header; refuse a file cut short before anything boots."""
    path = input_file(path, "image", "kernel file")
    with open_input(path, "image", "kernel file") as f:
        data = f.read(65536)
        image = parse_image(data, path)
        _check_whole(image, data, f, path.stat().st_size)
    return image


def image_length(data, fmt):
    """How long a kernel file must be, by its own headers (None when they do not say):
    a setup header's (setup_sects + 1) * 512 + syssize * 16, an ELF's furthest header or segment."""
    if fmt in ("bzImage", "zImage", "zImage (no setup header)") and len(data) >= SYSSIZE_OFF + 4:
        setup_sects = data[SETUP_SECTS_OFF] or 4          # 0 meant 4 in the oldest images
        protocol = struct.unpack_from("<H", data, VERSION_OFF)[0] if fmt != "zImage (no setup header)" else 0
        # syssize is 32 bits from boot protocol 2.04 on; before that the high half was swap_dev
        syssize = struct.unpack_from("<I" if protocol >= 0x0204 else "<H", data, SYSSIZE_OFF)[0]
        return (setup_sects + 1) * 512 + syssize * 16, f"setup_sects {setup_sects}, syssize {syssize}"
    return None


def _elf_length(head, f):
    """The end of an ELF file's furthest program header, segment or section header table, or None."""
    if len(head) < 0x34 or head[4] not in (1, 2) or head[5] != 1:
        return None
    wide = head[4] == 2
    if wide:
        phoff, shoff = struct.unpack_from("<QQ", head, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 0x36)
    else:
        phoff, shoff = struct.unpack_from("<II", head, 0x1C)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 0x2A)
    ends = [phoff + phentsize * phnum, shoff + shentsize * shnum if shoff else 0]
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    for i in range(min(phnum, len(table) // max(phentsize, 1))):
        if wide:
            p_type, _flags, p_offset, _v, _p, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        else:
            p_type, p_offset, _v, _p, p_filesz = struct.unpack_from("<IIIII", table, i * phentsize)
        if p_type == 1:                     # PT_LOAD
            ends.append(p_offset + p_filesz)
    return max(ends)


def _check_whole(image, head, f, size):
    """A kernel file shorter than its headers say (a copy cut short: `head -c`, a full disk) boots into
    nothing useful (a power-off before init, or an empty exit): refuse it at once, in one line."""
    if image.format == "elf":
        need, how = _elf_length(head, f), "its ELF headers and segments"
    else:
        known = image_length(head, image.format)
        need, how = (known[0], f"its setup header ({known[1]})") if known else (None, None)
    # syssize counts 16-byte units, rounded up: the last unit may be short
    if need is not None and size + 15 < need:
        raise GdbfaultError(f"kernel image {image.path} is cut short: {how} say it is {need:,} bytes, "
                            f"the file has {size:,}", "copy the whole image again")


def boot_plan(image):
    """How to boot `image` (a KernelImage) under QEMU 7.2."""
    if image.format in ("elf", "multiboot"):
        return BootPlan(QEMU_KERNEL, "ELF/multiboot image: QEMU -kernel loads it", False)
    if image.format == "unknown":
        raise GdbfaultError(f"{image.path} is not a kernel image gdbfault knows "
                            "(no ELF magic, no x86 boot sector with a setup header)",
                            "give a bzImage/zImage, or an ELF kernel with a multiboot header")
    if image.protocol is None:
        return BootPlan(GRUB, "zImage without a setup header (pre-1.3.73): booted by GRUB linux16", False)
    if image.protocol < (2, 2):
        return BootPlan(GRUB, f"boot protocol {image.protocol_text} < 2.02: QEMU 7.2's -kernel loader "
                              "corrupts such images, booted by GRUB linux16 instead", False)
    return BootPlan(QEMU_KERNEL, f"boot protocol {image.protocol_text}: QEMU -kernel", image.relocatable)
