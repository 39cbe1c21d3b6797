"""Is the System.map this kernel's? `linux_banner` read from the running guest, against the image's version.

`check_banner()` runs once the kernel is up (at the workload's first
instruction): it reads `linux_banner` at its System.map address from guest
memory through GDB and compares it with the image header's version string.
`linux_banner` is a `const char []` from 2.6 on (the map's address holds
the string) but a `const char *` in 2.0 - 2.4 (it holds a pointer to the
string): the bytes there decide which, and the pointer is followed. A
kernel that is not where its map says (KASLR, or the map of another build)
fails there with one line naming both. A kernel that dies before it starts
the workload (a panic at boot) is reported as such at once, with the
serial console's last words, instead of waiting for the timeout.
"""
import re
import time

from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.kernels.image import X86_64
from gdbfault.machine.qemu import describe_exit

__all__ = ["check_banner", "stop_at_entry", "read_banner", "banner_matches", "decode_banner",
           "read_guest_bytes", "boot_failure_words", "BANNER_SYMBOL", "ARRAY", "POINTER"]

BANNER_SYMBOL = "linux_banner"
BANNER_PREFIX = b"Linux version "
ARRAY, POINTER = "const char []", "const char *"


def banner_matches(banner, version):
    """Does a `linux_banner` string belong to an image whose version string is `version`?"""
    if not banner.startswith("Linux version "):
        return False
    if not version:
        return True
    release = version.split()[0]
    if banner[len("Linux version "):].split(" ", 1)[0] != release:
        return False
    build = version[version.find("#"):] if "#" in version else ""
    return not build or build.strip() in banner


def read_guest_bytes(dbg, address, size=256):
    """`size` bytes of guest memory at `address`, through GDB/MI."""
    rec, _ = dbg.mi(f"-data-read-memory-bytes {address:#x} {size}")
    blocks = (rec.get("payload") or {}).get("memory") or []
    return b"".join(bytes.fromhex(b.get("contents", "")) for b in blocks)


def _c_string(data):
    return data.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def pointer_era(image):
    """True for releases whose linux_banner is a `const char *` (1.x, 2.0 - 2.5)."""
    return bool(image.release and re.match(r"^(1\.|2\.[0-5]\.)", image.release))


# Where a kernel's own half of the address space begins, by pointer width.
_KERNEL_SPACE = {4: 0xC0000000, 8: 0xFFFFFFFF80000000}


def decode_banner(at_symbol, read, pointer_expected=False, word_size=4):
    """(banner text, form, where) from the bytes at linux_banner's address.

    `read(address)` returns guest bytes at an address. The bytes decide:
    "Linux version ..." is the string itself (2.6+); anything else is taken
    as a little-endian pointer (`word_size` bytes: 8 on an x86_64 kernel) to
    it (2.0 - 2.4) when it points into the kernel's half of the address space
    or the image's era says pointer.
    """
    if at_symbol.startswith(BANNER_PREFIX) or len(at_symbol) < word_size:
        return _c_string(at_symbol), ARRAY, None
    target = int.from_bytes(at_symbol[:word_size], "little")
    if target and (target >= _KERNEL_SPACE[word_size] or pointer_expected):
        pointed = read(target)
        if pointed.startswith(BANNER_PREFIX) or pointer_expected:
            return _c_string(pointed), POINTER, target
    return _c_string(at_symbol), ARRAY, None


def _wait_for_entry(dbg, number, stop_at, timeout, machine):
    """The MI stop at breakpoint `number`; a QEMU that exits first is a GuestError."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        stopped = dbg.wait_event(lambda r: r.get("message") == "stopped", min(1.0, max(left, 0)))
        if stopped is not None:
            payload = stopped.get("payload") or {}
            if str(payload.get("bkptno")) == number:
                return
            if payload.get("reason") in ("exited", "exited-normally", "signal-received"):
                raise GdbfaultError(f"the kernel stopped before the workload started "
                                    f"({payload.get('reason')})")
            continue
        if machine is not None and machine.poll() is not None:
            raise GuestError(f"the kernel never started the workload: QEMU exited "
                             f"({describe_exit(machine.poll())}) before init; "
                             f"serial console: {boot_failure_words(machine.serial_output())!r}")
        if left <= 0:
            raise GdbfaultError(f"the kernel never started the workload (no stop at its entry "
                                f"{stop_at:#x} within {timeout:.0f} s)")


def boot_failure_words(serial):
    """A panic/oops line if the console has one, else its last words."""
    lines = [l.strip() for l in serial.splitlines() if l.strip()]
    for line in lines:
        if line.startswith(("Kernel panic", "Oops", "Unable to handle kernel")):
            return line[:200]
    return " | ".join(lines[-3:])[-200:] or "(nothing)"


def check_banner(dbg, symbols, image, stop_at, timeout=600.0, machine=None):
    """Stop once at `stop_at` (the workload's entry), check the banner, stay stopped.

    Returns {"text", "form", "pointer"}, or None when the map has no
    linux_banner. Raises a one-line GdbfaultError on a mismatch, a
    GuestError when QEMU (`machine`) exits before the workload starts.
    """
    if symbols.address(BANNER_SYMBOL) is None or stop_at is None:
        return None
    stop_at_entry(dbg, stop_at, timeout, machine)
    return read_banner(dbg, symbols, image)


def stop_at_entry(dbg, stop_at, timeout=600.0, machine=None):
    """Run the guest until it first executes `stop_at` (the workload's entry) and stay stopped there.

    A GuestError when QEMU (`machine`) exits first (a panic at boot)."""
    rec, _ = dbg.mi(f"-break-insert -t *{stop_at:#x}")
    number = str(((rec.get("payload") or {}).get("bkpt") or {}).get("number"))
    dbg.mi("-exec-continue")
    _wait_for_entry(dbg, number, stop_at, timeout, machine)


def read_banner(dbg, symbols, image, unreadable_ok=False):
    """check_banner's check, on a guest already stopped with the kernel up. With `unreadable_ok`
    a banner the guest's memory does not give is no error (None): only a mismatch is."""
    address = symbols.address(BANNER_SYMBOL)
    if address is None:
        return None
    try:
        banner, form, pointer = decode_banner(read_guest_bytes(dbg, address),
                                              lambda where: read_guest_bytes(dbg, where),
                                              pointer_era(image), 8 if symbols.arch == X86_64 else 4)
    except GdbfaultError as exc:
        if unreadable_ok:
            return None
        raise GdbfaultError(f"cannot read {BANNER_SYMBOL} at {address:#x} from guest memory to check "
                            f"the System.map: {str(exc).splitlines()[0]}")
    if not banner_matches(banner, image.version):
        image_says = image.version or "(no version string in the image)"
        hint = (" — KASLR moved the kernel? boot with nokaslr" if image.relocatable and
                "nokaslr" not in banner else "")
        where = f" (a {POINTER} to {pointer:#x})" if pointer else ""
        raise GdbfaultError(f"System.map does not match the running kernel: at {BANNER_SYMBOL} "
                            f"({address:#x}){where} guest memory holds {banner[:90]!r}, the image "
                            f"{image.path.name} is {image_says[:90]!r}{hint}",
                            f"give the System.map of this very build ({symbols.source})")
    return {"text": banner, "form": form, "pointer": pointer}
