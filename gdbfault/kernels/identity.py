"""Is it this kernel? The kernel file's own bytes held against its System.map and against a running guest.

`image_code(path)` gives the bytes a kernel file loads, by virtual address:
an ELF's PT_LOAD segments, or a bzImage's protected-mode part — flat (the
lab's oldboot fixture carries its kernel uncompressed) or compressed the way
Linux packs it (gzip in 2.x, bzip2/xz/lzma later; a 2.x payload is the raw
kernel loaded at 1 MiB, from 2.6.26 on an ELF vmlinux). Compressions Python
has no decoder for (lz4, lzo, zstd) give no code, and the checks say so.

Two checks use it:
- `check_map_fits()`, before anything boots: a System.map of another build
  can put linux_banner where this image has it too (the lab's 2.2 and 2.4
  style builds do), so the banner alone passes it. The code settles it:
  every `call rel32` in the image goes to the start of a function, so with
  this build's map (nearly) every call target is a symbol of the map; with
  another build's, only the functions that did not move are (measured: 106
  of 106 call targets against 29 of 106 on the oldboot fixtures; a Debian
  6.1 image 85% with its map, 5% with the map 16 bytes off — stray E8 bytes
  in a 12 MB text make the rest).
- `check_running_kernel()`, attached to a QEMU gdbfault did not start: the
  guest's `linux_banner` against the file's, and the code at each probe
  address against the file's bytes there (a live-patched entry — a `jmp`
  over the first five bytes, the rest unchanged — is accepted and named, and
  so are the few bytes a kernel rewrites in itself at boot).
"""
import bz2
import functools
import io
import lzma
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import LIMITS, read_input_bytes
from gdbfault.kernels.banner import BANNER_SYMBOL, POINTER, banner_matches, decode_banner, pointer_era
from gdbfault.kernels.symbols import CODE_LETTERS

__all__ = ["ImageCode", "image_code", "map_fit", "check_map_fits", "check_running_kernel", "MIN_CALLS",
           "MIN_FIT"]

PAGE_OFFSET = 0xC0000000
RAW_LOAD = 0x100000               # where a bzImage's kernel is loaded (and a 2.x kernel decompressed)
MIN_CALLS = 20                    # fewer distinct call targets than this: too few to judge a map
MIN_FIT = 0.5                     # this build's map: 0.85-1.0; another build's: 0.05-0.3
PROBE_BYTES = 16                  # compared at each probe address
# A kernel rewrites some of its own code at boot (paravirt calls, alternatives, ftrace's call sites
# turned into nops): on Debian's amd64 6.1, exc_page_fault's first 16 bytes differ from the file in 4
# (`call *pv_ops` became `mov %cr2,%rax`). The code at another kernel's or another build's address is
# another function: far fewer bytes agree. So a probe fits when at least this many bytes agree.
PROBE_BYTES_SAME = 10
JMP_REL32 = 0xE9
_UNPACK_LIMIT = LIMITS["image"][0]

# (magic, name, decoder(data) -> bytes) of the compressions Python can undo
_GZIP, _BZIP2, _XZ, _LZMA = b"\x1f\x8b\x08", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00"


@dataclass
class ImageCode:
    """A kernel file's loaded bytes: [(virtual address, bytes, executable)], and how they were found."""

    segments: list = field(default_factory=list)
    how: str = ""
    missing: str = None           # why there is no code (a compression we cannot undo)

    def __bool__(self):
        return bool(self.segments)

    def read(self, address, size):
        """The file's bytes at a virtual address (b"" where the file has none)."""
        for start, data, _ in self.segments:
            if start <= address < start + len(data):
                return data[address - start:address - start + size]
        return b""

    def text(self):
        """[(start, bytes)] of the executable parts (all of a raw binary: it has no flags)."""
        return [(start, data) for start, data, code in self.segments if code]


def _elf_segments(blob):
    """[(vaddr, bytes, executable)] of an ELF's PT_LOAD segments (32 or 64 bit, little-endian)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        elf = ELFFile(io.BytesIO(blob))
        return [(seg["p_vaddr"] & 0xFFFFFFFFFFFFFFFF, seg.data(), bool(seg["p_flags"] & 1))
                for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
    except (ELFError, ValueError, struct.error):
        return []


def _unpack(data):
    """(bytes, name) of the first compressed stream in `data` Python can undo, or (None, what was seen)."""
    seen = []
    for magic, name in ((_GZIP, "gzip"), (_XZ, "xz"), (_BZIP2, "bzip2"), (_LZMA, "lzma")):
        start = data.find(magic)
        tries = 0
        while start >= 0 and tries < 4:
            tries += 1
            try:
                if name == "gzip":
                    out = zlib.decompressobj(31).decompress(data[start:], _UNPACK_LIMIT)
                elif name == "xz":
                    out = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data[start:], _UNPACK_LIMIT)
                elif name == "lzma":
                    out = lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data[start:], _UNPACK_LIMIT)
                else:
                    out = bz2.BZ2Decompressor().decompress(data[start:start + (64 << 20)])
                if len(out) > 4096:
                    return out, name
            except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
                pass
            start = data.find(magic, start + 1)
        if tries:
            seen.append(name)
    return None, ", ".join(seen)


@functools.lru_cache(maxsize=4)
def _image_code(path, _mtime, _size, base_hint):
    blob = read_input_bytes(path, "image", "kernel file")
    if blob[:4] == b"\x7fELF":
        return ImageCode(_elf_segments(blob), "the ELF's loadable segments")
    if len(blob) < 0x264 or blob[0x202:0x206] != b"HdrS":
        return ImageCode(missing="no setup header to find the kernel's code by")
    setup = ((blob[0x1F1] or 4) + 1) * 512
    protected = blob[setup:]
    protocol = struct.unpack_from("<H", blob, 0x206)[0]
    payload = protected
    if protocol >= 0x0208:              # the header says where the compressed kernel is
        offset, length = struct.unpack_from("<II", blob, 0x248)
        payload = protected[offset:offset + length] or protected
    version = _header_version(blob)
    if version and (b"Linux version " + version.split()[0].encode()) in protected:
        # the banner is readable as it is: the kernel is not compressed (the lab's oldboot fixture)
        return ImageCode([(PAGE_OFFSET + RAW_LOAD, protected, True)], "the image's flat protected-mode part")
    raw, name = _unpack(payload)
    if raw is None:
        return ImageCode(missing="its compressed kernel is in a format gdbfault cannot unpack"
                                 + (f" (tried {name})" if name else ""))
    if raw[:4] == b"\x7fELF":
        return ImageCode(_elf_segments(raw), f"the {name}-compressed vmlinux inside the image")
    base = base_hint if base_hint is not None else PAGE_OFFSET + RAW_LOAD
    return ImageCode([(base, raw, True)], f"the {name}-compressed kernel inside the image")


def _header_version(blob):
    ptr = struct.unpack_from("<H", blob, 0x20E)[0]
    if not ptr or 0x200 + ptr >= len(blob):
        return None
    text = blob[0x200 + ptr:0x200 + ptr + 256].split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return text if text[:1].isdigit() else None


def image_code(path, symbols=None):
    """The ImageCode of a kernel file (cached per file and version of it). `symbols` (a SymbolTable)
    places a raw decompressed kernel at its `_text` when the map has one."""
    path = Path(path)
    st = path.stat()
    base = None
    if symbols is not None:
        base = symbols.address("_text") or symbols.address("startup_32")
    return _image_code(str(path), st.st_mtime_ns, st.st_size, base)


def _address_mask(address):
    """Where a relative branch wraps: at 4 GiB in an i386 kernel, at 2^64 in an x86_64 one
    (whose code lies above 4 GiB, at 0xffffffff8...)."""
    return 0xFFFFFFFF if address < 1 << 32 else (1 << 64) - 1


def call_targets(code):
    """Distinct targets of every E8 rel32 (call) in the code that land inside it (not on the next
    instruction: `call 1f` fetches the pc)."""
    targets = set()
    for start, data in code.text():
        end = start + len(data)
        for m in re.finditer(b"\xe8", data):
            i = m.start()
            if i + 5 > len(data):
                break
            after = start + i + 5
            target = (after + struct.unpack_from("<i", data, i + 1)[0]) & _address_mask(start)
            if start <= target < end and target != after:
                targets.add(target)
    return targets


def map_fit(rows, code):
    """(call targets, of them where the map has a function, targets) of a map's rows against the code."""
    functions = {row.address for row in rows if row.letter in CODE_LETTERS + "wW"}
    targets = call_targets(code)
    return len(targets), len(targets & functions), targets


def check_map_fits(rows, map_path, image_path, version, code, probes=()):
    """Refuse a System.map whose functions are not where this image's code calls them (one line)."""
    if not code:
        return {"checked": False, "why": code.missing}
    total, hits, targets = map_fit(rows, code)
    if total < MIN_CALLS:
        return {"checked": False, "why": f"only {total} call targets in the image's code"}
    if hits / total >= MIN_FIT:
        return {"checked": True, "calls": total, "at_functions": hits}
    off = [p for p in probes if p.address not in targets]
    example = ""
    if off:
        p = off[0]
        example = f"; e.g. the map's {p.symbol} ({p.address:#x}) is where no call of the image goes"
    image = Path(image_path).name
    raise GdbfaultError(f"System.map {map_path} does not match the kernel image {image} "
                        f"({version or 'no version string'}): it is the map of another build"
                        f"{_map_version(map_path, image_path)} — of the {total} "
                        f"functions the image's code calls, {hits} start where the map puts a function (with "
                        f"this build's own map: nearly all){example}",
                        "give the System.map of this very build")


def _map_version(map_path, image_path):
    """What can be told of the version a System.map belongs to (a map holds no version string): the
    release in its file name (`System.map-6.1.0-50-686`, as /boot has them), or the version of the
    kernel image beside it. '' when nothing says."""
    map_path, image_path = Path(map_path), Path(image_path)
    m = re.match(r"System\.map-(.+)$", map_path.name)
    if m:
        return f" (its file name says {m.group(1)})"
    from gdbfault.kernels.image import read_image
    for name in ("bzImage", "zImage", "vmlinuz", "vmlinux"):
        beside = map_path.parent / name
        try:
            if beside.is_file() and beside.resolve() != image_path.resolve():
                other = read_image(beside).version
                if other:
                    return f" (the image beside it, {beside}, is {other})"
        except GdbfaultError:
            continue
    return ""


def _needle(banner):
    """The fixed start of a banner to look for nearby ('Linux version ', 'gdbfault lab kernel ')."""
    if banner.startswith("Linux version "):
        return b"Linux version "
    return banner.split("(")[0].encode()[:24] or None


def _banner_near(read, address, needle):
    """A banner-like string within 4 KiB of `address` in guest memory (to name what runs), or None."""
    if not needle:
        return None
    lo = max(address - 0x1000, 0)
    window = read(lo, 0x2000)
    at = window.find(needle)
    if at < 0:
        return None
    return window[at:at + 160].split(b"\0", 1)[0].decode("ascii", "replace").strip()


def check_running_kernel(read, symbols, probes, kernel_path, label, image=None, code=None):
    """Refuse counting on a guest that does not run this kernel (one line naming both), before any probe.

    `read(address, size)` returns guest memory (b"" or short where unreadable); `image` is the
    kernels.image.KernelImage of a brought kernel (None for an ELF without a setup header);
    `code` its ImageCode. Returns {"banner", "form", "checked"} (what was compared), or raises."""
    out = {"banner": None, "form": None, "checked": []}
    address = symbols.address(BANNER_SYMBOL)
    if address is not None:
        at = read(address, 256)
        if len(at) < 4:
            raise GdbfaultError(f"cannot read the running kernel's {BANNER_SYMBOL} at {address:#x} to check it is "
                                f"{label} (is paging on yet? attach once the guest has booted)")
        guest, form, pointer = decode_banner(at, lambda where: read(where, 256),
                                             pointer_era(image) if image is not None else False)
        mine = None
        if code:
            file_at = code.read(address, 256)
            if file_at:
                mine, _, _ = decode_banner(file_at, lambda where: code.read(where, 256),
                                           pointer_era(image) if image is not None else False)
        same = guest == mine if mine else banner_matches(guest, image.version if image else None)
        if not same:
            says = mine or (f"Linux version {image.version}" if image is not None and image.version else "?")
            running = guest if guest.isprintable() and guest else None
            if running is None or not running.startswith(says[:8]):
                running = _banner_near(read, address, _needle(says)) or running
            it_says = f"it says {running[:100]!r}" if running else f"it has no banner there ({at[:8].hex(' ')} …)"
            where = f" (a {POINTER} to {pointer:#x})" if pointer else ""
            raise GdbfaultError(f"the running kernel is not {label}: {it_says}, {label} says "
                                f"{says[:100]!r} (at {BANNER_SYMBOL} {address:#x}{where})",
                                "name the kernel the guest runs (--kernel/--variant/--system-map)")
        out.update(banner=guest, form=form)
        out["checked"].append("banner")
    if not code:
        out["code"] = code.missing if code is not None else "no kernel file to compare"
        return out
    patched = []
    for probe in probes:
        mine = code.read(probe.address, PROBE_BYTES)
        if len(mine) < PROBE_BYTES:
            continue
        theirs = read(probe.address, PROBE_BYTES)
        if theirs == mine:
            continue
        if len(theirs) == PROBE_BYTES and theirs[0] == JMP_REL32 and theirs[5:] == mine[5:]:
            target = (probe.address + 5 + struct.unpack_from("<i", theirs, 1)[0]) & _address_mask(probe.address)
            patched.append({"symbol": probe.symbol, "address": probe.address, "jmp_to": target})
            continue
        if sum(a == b for a, b in zip(theirs, mine)) >= PROBE_BYTES_SAME:
            out.setdefault("rewritten_at_boot", []).append(probe.symbol)
            continue
        raise GdbfaultError(f"the running kernel is not {label}: at {probe.symbol} ({probe.address:#x}) guest "
                            f"memory holds {theirs.hex(' ') or 'nothing readable'}, {Path(kernel_path).name} "
                            f"has {mine.hex(' ')}", "name the kernel the guest runs (--kernel/--variant/--system-map)")
    out["checked"].append(f"code at {len(probes)} probe addresses")
    if patched:
        out["live_patched"] = patched
    return out
