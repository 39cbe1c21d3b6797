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

- "pvh": an x86_64 bzImage whose payload gdbfault can decompress (xz,
  gzip, bzip2: Python's own modules) into an ELF vmlinux with a PVH entry
  note: QEMU's `-kernel` loads that vmlinux and enters it at its 32-bit PVH
  entry, so the guest runs no decompressor (on Debian's amd64 6.1 kernel
  4.4e9 of the 6.1e9 instructions before init are xz; a record and its
  replay each pay them). Same kernel code, same System.map, no KASLR. The
  vmlinux is kept in gdbfault's cache, named by the bzImage's digest
  (`extract_vmlinux`).

Also read here: whether the image may randomise its own base address (KASLR:
protocol >= 2.05 with the relocatable_kernel flag), which decides whether
`nokaslr` is appended; and which architecture it is for (`arch`): a bzImage
says it has a 64-bit entry in its xloadflags (protocol >= 2.12, bit 0
XLF_KERNEL_64), an ELF by its class and machine. i386 images need
qemu-system-i386 (or -x86_64), x86_64 ones qemu-system-x86_64
(kernels/arch.py matches them); `memory_floor_bytes` is what the image
needs loaded and unpacked.
"""
import bz2
import hashlib
import lzma
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import cache_dir
from gdbfault.base.userfiles import input_file, open_input

__all__ = ["KernelImage", "BootPlan", "read_image", "parse_image", "image_length", "boot_plan", "extract_vmlinux",
           "elf_boot_facts", "QEMU_KERNEL", "GRUB", "PVH", "I386", "X86_64"]

QEMU_KERNEL = "qemu-kernel"
GRUB = "grub"
PVH = "pvh"
I386, X86_64 = "i386", "x86_64"

HDR_MAGIC_OFF = 0x202        # "HdrS"
VERSION_OFF = 0x206          # u16 boot protocol version
KVER_PTR_OFF = 0x20E         # u16: kernel_version string at this + 0x200
SETUP_SECTS_OFF = 0x1F1      # u8
SYSSIZE_OFF = 0x1F4          # u32 (u16 before protocol 2.04): the protected-mode part, in 16-byte units
LOADFLAGS_OFF = 0x211        # u8, bit 0 LOADED_HIGH (bzImage)
RELOCATABLE_OFF = 0x234      # u8 relocatable_kernel (protocol >= 2.05)
XLOADFLAGS_OFF = 0x236       # u16 xloadflags (protocol >= 2.12)
XLF_KERNEL_64 = 1 << 0       # the kernel has a 64-bit entry point: an x86_64 kernel
PAYLOAD_OFF = 0x248          # u32 payload_offset, u32 payload_length (protocol >= 2.08)
PREF_ADDRESS_OFF = 0x258     # u64 pref_address (protocol >= 2.10)
INIT_SIZE_OFF = 0x260        # u32 init_size: memory the kernel needs from pref_address on (>= 2.10)
BOOT_FLAG_OFF = 0x1FE        # u16 0xAA55
MULTIBOOT_MAGIC = 0x1BADB002
# ELF identification: (EI_CLASS, e_machine) -> architecture
ELF_ARCH = {(1, 3): I386, (2, 62): X86_64}
# The PVH entry note of a vmlinux (Xen's ELF note type XEN_ELFNOTE_PHYS32_ENTRY)
XEN_ELFNOTE_PHYS32_ENTRY = 18
# Payload compressions Python reads by itself: magic -> how to decompress
_DECOMPRESS = {
    b"\xfd7zXZ\x00": lambda data: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data),
    b"\x1f\x8b": lambda data: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data),
    b"BZh": lambda data: bz2.BZ2Decompressor().decompress(data),
}


@dataclass
class KernelImage:
    path: Path
    format: str                 # "elf", "bzImage", "zImage", "zImage (no setup header)", "unknown"
    protocol: tuple = None      # (major, minor) of the boot protocol, None if no HdrS
    version: str = None         # the image's kernel_version string, if it has one
    multiboot: bool = False
    relocatable: bool = False   # may apply KASLR (protocol >= 2.05 and relocatable_kernel)
    arch: str = None            # I386 or X86_64; None when the image does not say (unknown format)
    xloadflags: int = None      # a bzImage's, from protocol 2.12 on
    pref_address: int = None    # where a bzImage wants to be unpacked (protocol >= 2.10)
    init_size: int = None       # how much memory it needs from there (protocol >= 2.10)
    payload: tuple = None       # (file offset, length) of a bzImage's compressed kernel (>= 2.08)

    @property
    def protocol_text(self):
        return f"{self.protocol[0]}.{self.protocol[1]:02d}" if self.protocol else "none"

    def memory_floor_bytes(self):
        """Guest memory the image needs loaded and unpacked (a bzImage's pref_address + init_size;
        an ELF's highest load address: elf_boot_facts), None when the header does not say."""
        if self.pref_address is not None and self.init_size:
            return self.pref_address + self.init_size
        if self.format == "elf":
            return elf_boot_facts(self.path)["load_end"]
        return None

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
        machine = struct.unpack_from("<H", data, 18)[0] if len(data) >= 20 else None
        return KernelImage(path, "elf", multiboot=_multiboot_header(data),
                           arch=ELF_ARCH.get((data[4] if len(data) > 4 else None, machine)))
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
    image = KernelImage(path, fmt, protocol, version, relocatable=relocatable, arch=I386)
    if raw >= 0x020C and len(data) >= XLOADFLAGS_OFF + 2:
        image.xloadflags = struct.unpack_from("<H", data, XLOADFLAGS_OFF)[0]
        if image.xloadflags & XLF_KERNEL_64:
            image.arch = X86_64
    if raw >= 0x0208 and len(data) >= PAYLOAD_OFF + 8:
        setup_sects = data[SETUP_SECTS_OFF] or 4
        offset, length = struct.unpack_from("<II", data, PAYLOAD_OFF)
        if length:
            image.payload = ((setup_sects + 1) * 512 + offset, length)
    if raw >= 0x020A and len(data) >= INIT_SIZE_OFF + 4:
        image.pref_address = struct.unpack_from("<Q", data, PREF_ADDRESS_OFF)[0]
        image.init_size = struct.unpack_from("<I", data, INIT_SIZE_OFF)[0]
    return image


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


def elf_boot_facts(path):
    """{"load_end": highest physical load address, "pvh": has a PVH entry note} of an ELF kernel."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    facts = {"load_end": None, "pvh": False}
    try:
        with open(path, "rb") as f:
            for seg in ELFFile(f).iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    end = seg["p_paddr"] + seg["p_memsz"]
                    facts["load_end"] = max(facts["load_end"] or 0, end)
                elif seg["p_type"] == "PT_NOTE":
                    facts["pvh"] |= any(n["n_name"] == "Xen" and n["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY
                                        for n in seg.iter_notes())
    except (ELFError, OSError, ValueError, struct.error) as exc:
        raise GdbfaultError(f"cannot read the ELF kernel {path}: {exc}")
    return facts


def extract_vmlinux(image):
    """The ELF vmlinux inside an x86_64 bzImage, decompressed once into gdbfault's cache
    (named by the image's digest); None when the payload is in a compression Python cannot
    read or holds no x86_64 ELF with a PVH entry (the bzImage is then booted as it is)."""
    if image.format != "bzImage" or image.arch != X86_64 or image.payload is None:
        return None
    data = Path(image.path).read_bytes()
    folder = cache_dir() / "vmlinux"
    out = folder / f"{hashlib.sha256(data).hexdigest()[:24]}.elf"
    if out.is_file():
        return out
    offset, length = image.payload
    payload = data[offset:offset + length]
    decompress = next((fn for magic, fn in _DECOMPRESS.items() if payload.startswith(magic)), None)
    if decompress is None:
        return None
    try:
        body = decompress(payload)
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError):
        return None
    if parse_image(body[:64]).arch != X86_64:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: two runs extracting the same image at once both end well.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vmlinux-")
    except OSError:                      # no writable cache: the bzImage boots as it is
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        if not elf_boot_facts(tmp)["pvh"]:
            return None
        os.replace(tmp, out)
    except OSError:
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def boot_plan(image):
    """How to boot `image` (a KernelImage) under QEMU 7.2 (see the module docstring;
    the PVH path is chosen by kernels/boot.py, which extracts the vmlinux)."""
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
