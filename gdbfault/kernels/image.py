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

__all__ = ["KernelImage", "BootPlan", "read_image", "boot_plan", "QEMU_KERNEL", "GRUB"]

QEMU_KERNEL = "qemu-kernel"
GRUB = "grub"

HDR_MAGIC_OFF = 0x202        # "HdrS"
VERSION_OFF = 0x206          # u16 boot protocol version
KVER_PTR_OFF = 0x20E         # u16: kernel_version string at this + 0x200
SETUP_SECTS_OFF = 0x1F1      # u8
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
    """Read and parse a kernel image file's header."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(65536)
    except FileNotFoundError:
        raise GdbfaultError(f"kernel file not found: {path}")
    return parse_image(data, path)


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
