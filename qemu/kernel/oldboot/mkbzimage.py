#!/usr/bin/env python3
"""Package the lab kernel as a Linux 2.2- or 2.4-style bzImage.

    mkbzimage.py SETUP.BIN KERNEL.ELF SYSTEM.MAP OUT

The boot protocol is the one its release shipped with: 2.01 for a 2.2 (or
older) release, which QEMU's -kernel cannot boot (gdbfault uses GRUB), 2.03
for 2.4 (QEMU -kernel, as a real 2.4 kernel is booted).

The image is the real-mode setup (setup.S, assembled flat) followed by the
kernel's loadable segments as one flat blob that the boot loader puts at
1 MiB. Filled in here: setup_sects, syssize, code32_start (the physical
address of startup_32, from the System.map) and the kernel_version string
(the kernel's own "Linux version ..." banner, without that prefix, so a
tool can tell the image and the running kernel apart by it). The ELF's
symbols stay behind: like a real bzImage, the image has none.
"""
import struct
import sys

LOAD_ADDRESS = 0x100000       # where a bzImage's protected-mode part goes
PAGE_OFFSET = 0xC0000000
SETUP_SECTS, SYSSIZE, VERSION, CODE32_START, KVER_PTR = 0x1F1, 0x1F4, 0x206, 0x214, 0x20E


def protocol_of(release):
    """The boot protocol a release's bzImage had: 2.03 from 2.4 on, else 2.01."""
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return 0x0201
    return 0x0203 if (major, minor) >= (2, 4) else 0x0201


def load_segments(image):
    """[(p_paddr, file bytes)] of a 32-bit little-endian ELF's PT_LOAD segments.

    Read with struct, not pyelftools: this runs inside `make`, also from a
    pip build, whose isolated environment has only the build's own packages."""
    if image[:4] != b"\x7fELF" or image[4] != 1 or image[5] != 1:
        raise ValueError("not a 32-bit little-endian ELF")
    phoff, = struct.unpack_from("<I", image, 0x1C)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x2A)
    out = []
    for i in range(phnum):
        p_type, p_offset, _vaddr, p_paddr, p_filesz = struct.unpack_from("<5I", image, phoff + i * phentsize)
        if p_type == 1 and p_filesz:                  # PT_LOAD
            out.append((p_paddr, image[p_offset:p_offset + p_filesz]))
    return out


def flat_payload(elf_path):
    """The PT_LOAD segments laid out from LOAD_ADDRESS, as objcopy -O binary would."""
    with open(elf_path, "rb") as f:
        try:
            segments = load_segments(f.read())
        except ValueError as exc:
            sys.exit(f"mkbzimage: {elf_path}: {exc}")
    if not segments or min(a for a, _ in segments) != LOAD_ADDRESS:
        sys.exit(f"mkbzimage: {elf_path} does not load at {LOAD_ADDRESS:#x}")
    blob = bytearray(max(a + len(d) for a, d in segments) - LOAD_ADDRESS)
    for addr, data in segments:
        blob[addr - LOAD_ADDRESS:addr - LOAD_ADDRESS + len(data)] = data
    return bytes(blob)


def symbol(map_path, name):
    for line in open(map_path):
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    sys.exit(f"mkbzimage: no {name} in {map_path}")


def main(setup_path, elf_path, map_path, out_path):
    setup = bytearray(open(setup_path, "rb").read())
    if len(setup) % 512 or setup[0x202:0x206] != b"HdrS":
        sys.exit(f"mkbzimage: {setup_path} is not a setup with a 2.x header")
    payload = flat_payload(elf_path)
    start = payload.find(b"Linux version ")
    if start < 0:
        sys.exit(f"mkbzimage: no 'Linux version' banner in {elf_path}")
    end = min(i for i in (payload.find(b"\n", start), payload.find(b"\0", start)) if i >= 0)
    version = payload[start + len("Linux version "):end]
    setup[SETUP_SECTS] = len(setup) // 512 - 1
    struct.pack_into("<H", setup, VERSION, protocol_of(version.split(b" ")[0].decode("ascii", "replace")))
    struct.pack_into("<H", setup, SYSSIZE, (len(payload) + 15) // 16)
    struct.pack_into("<I", setup, CODE32_START, symbol(map_path, "startup_32") - PAGE_OFFSET)
    where = 0x200 + struct.unpack_from("<H", setup, KVER_PTR)[0]
    if len(version) >= 127:
        sys.exit("mkbzimage: version string too long")
    setup[where:where + len(version) + 1] = version + b"\0"
    with open(out_path, "wb") as f:
        f.write(setup + payload)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(*sys.argv[1:])
