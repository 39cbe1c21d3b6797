#!/usr/bin/env python3
"""What architecture a kernel image and a System.map are for, and the vmlinux inside a bzImage.

    scripts/kernel-image-info.py IMAGE [--system-map MAP] [--extract-vmlinux OUT]

Prints one JSON object: the image's format, boot protocol, xloadflags, its
architecture (x86_64 or i386) and which QEMU runs it; with --system-map, the
map's architecture (16 or 8 hex digits per address) and whether the two
agree. --extract-vmlinux decompresses the bzImage payload (xz, gzip; Python's
own lzma/zlib) into OUT: an ELF vmlinux without symbols, which
qemu-system-x86_64 boots through its PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)
with no decompressor run in the guest.

How the architecture is read:
- bzImage (boot sector 0xAA55 at 0x1FE, "HdrS" at 0x202): boot protocol at
  0x206; from protocol 2.12 on, xloadflags at 0x236, whose bit 0
  (XLF_KERNEL_64) says the image has a 64-bit entry point: an x86_64 kernel.
  Protocol < 2.12 or bit 0 clear: i386. (Debian 6.1: amd64 0x7f, 686 0x04.)
- ELF: e_ident[EI_CLASS] (1 ELF32, 2 ELF64) and e_machine (3 EM_386,
  62 EM_X86_64).
- System.map: x86_64 addresses have 16 hex digits (text at ffffffff8...),
  i386 ones 8 (c0000000 and up).
Exit status 2 when the map's architecture differs from the image's.
"""
import argparse
import json
import lzma
import struct
import sys
import zlib

XLF_KERNEL_64 = 1 << 0
XLF_NAMES = ["KERNEL_64", "CAN_BE_LOADED_ABOVE_4G", "EFI_HANDOVER_32", "EFI_HANDOVER_64",
             "EFI_KEXEC", "5LEVEL", "5LEVEL_ENABLED"]
EM = {3: "i386", 62: "x86_64"}
QEMU = {"x86_64": "qemu-system-x86_64", "i386": "qemu-system-i386"}


def image_info(data):
    if data[:4] == b"\x7fELF":
        cls, machine = data[4], struct.unpack_from("<H", data, 18)[0]
        arch = EM.get(machine, f"e_machine {machine}")
        return {"format": "elf", "elf_class": {1: "ELF32", 2: "ELF64"}.get(cls, cls), "arch": arch}
    if len(data) < 0x240 or struct.unpack_from("<H", data, 0x1FE)[0] != 0xAA55 or data[0x202:0x206] != b"HdrS":
        return {"format": "unknown", "arch": None}
    raw = struct.unpack_from("<H", data, 0x206)[0]
    info = {"format": "bzImage" if data[0x211] & 1 else "zImage", "protocol": f"{raw >> 8}.{raw & 0xff:02d}"}
    xlf = struct.unpack_from("<H", data, 0x236)[0] if raw >= 0x020C else 0
    info["xloadflags"] = f"{xlf:#x}"
    info["xloadflags_set"] = [n for i, n in enumerate(XLF_NAMES) if xlf & (1 << i)]
    info["arch"] = "x86_64" if xlf & XLF_KERNEL_64 else "i386"
    if raw >= 0x0208:
        setup = (data[0x1F1] or 4) + 1
        off, length = struct.unpack_from("<II", data, 0x248)
        info["payload"] = {"offset": setup * 512 + off, "length": length}
    if raw >= 0x020A:
        info["pref_address"] = f"{struct.unpack_from('<Q', data, 0x258)[0]:#x}"
        info["init_size"] = f"{struct.unpack_from('<I', data, 0x260)[0]:#x}"
    return info


def map_arch(path):
    with open(path) as f:
        for line in f:
            word = line.split(None, 1)[0] if line.strip() else ""
            if len(word) == 16 and word.startswith("ffffffff8"):
                return "x86_64"
            if len(word) == 8 and word[0] in "cdef":
                return "i386"
    return None


def extract_vmlinux(data, info, out):
    p = info.get("payload")
    if not p:
        raise SystemExit("no payload fields in this header (protocol < 2.08)")
    payload = data[p["offset"]:p["offset"] + p["length"]]
    if payload.startswith(b"\xfd7zXZ\x00"):
        body = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    else:
        raise SystemExit(f"payload compression not handled here (magic {payload[:6].hex()})")
    with open(out, "wb") as f:
        f.write(body)
    return len(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--system-map")
    ap.add_argument("--extract-vmlinux", metavar="OUT")
    a = ap.parse_args()
    with open(a.image, "rb") as f:
        data = f.read()
    info = image_info(data)
    info["qemu"] = QEMU.get(info["arch"])
    status = 0
    if a.system_map:
        info["system_map_arch"] = map_arch(a.system_map)
        info["system_map_matches"] = info["system_map_arch"] == info["arch"]
        status = 0 if info["system_map_matches"] else 2
    if a.extract_vmlinux:
        info["vmlinux_bytes"] = extract_vmlinux(data, info, a.extract_vmlinux)
        with open(a.extract_vmlinux, "rb") as f:
            info["vmlinux"] = image_info(f.read(64))
    json.dump(info, sys.stdout, indent=1)
    print()
    return status


if __name__ == "__main__":
    sys.exit(main())
