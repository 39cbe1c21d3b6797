"""Booting a kernel the user brings (not the lab kernel), and checking it.

`prepare_boot()` turns (kernel image, workload, command line) into what QEMU
needs: it reads the image header (bootimage), builds the guest's root for
the workload (guestroot), chooses the boot path — QEMU `-kernel` for ELF and
protocol >= 2.02 images, GRUB for older ones (grubboot) — and completes the
command line (`console=ttyS0`, `panic=-1`, `nokaslr` where the image may
randomise its base, `root=/dev/ram0 init=/init` for an ext2 initrd).

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
import os
import re
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.kernels.image import GRUB, BootPlan, boot_plan, read_image
from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.machine.qemu import describe_exit, snapshot_store, snapshot_store_available

__all__ = ["BootSetup", "prepare_boot", "check_banner", "stop_at_entry", "read_banner", "banner_matches", "root_kind",
           "decode_banner", "truth_model", "icount_shift", "MIN_MEMORY_MB", "OLD_KERNEL_SHIFT"]

MIN_MEMORY_MB = 256        # a modern distribution kernel wants >= 128 MB; 256 leaves room
# -icount shift for pre-2.6 kernels and the GRUB path: 2**5 = 32 ns of guest
# time per instruction (a ~31 MHz CPU, as 2.x kernels ran on). Old boots
# busy-wait on time (GRUB's TSC calibration against the PIT, BogoMIPS-
# calibrated udelay, IDE probe timeouts), and at shift=0 every guest
# nanosecond of waiting is one emulated instruction: GRUB + the oldboot
# fixture to power-off took 4.7 s of host CPU at shift=0, 1.6 at shift=5
# (1.2 with no icount). Path costs stay in instructions (query-replay counts
# instructions whatever the shift); the guest's rdtsc counts 32 per one.
OLD_KERNEL_SHIFT = 5
BANNER_SYMBOL = "linux_banner"
BANNER_PREFIX = b"Linux version "
ARRAY, POINTER = "const char []", "const char *"


@dataclass
class BootSetup:
    kernel: Path                   # what QEMU's -kernel gets
    initrd: list
    append: str
    memory_mb: int
    extra_args: list = field(default_factory=list)
    work_dir: Path = None          # remove after the run
    image: object = None           # bootimage.KernelImage
    plan: object = None            # bootimage.BootPlan
    root: str = None               # "initramfs (newc cpio)" or "ext2 initrd"
    # -icount for record/replay. sleep=off warps virtual time over idle periods
    # instead of following the host clock: on a Debian 6.1 boot the record file
    # shrinks from 166 MB to 1.7 MB and the replay from ~5 min to ~30 s. The GRUB
    # path keeps sleep=on: with its blkreplay disk, rr=record + sleep=off hung here.
    rr_icount: str = "shift=0,sleep=off"
    # Old kernels (pre-2.6: GRUB or ext2 initrd) boot slowly and busy-wait, so
    # their replay starts from a snapshot taken at the workload's entry in the
    # recording, instead of replaying the boot (gdb_run.py). The snapshot lives
    # in a qcow2 file: the boot disk's overlay, or one attached to no device.
    replay_from_entry: bool = False

    def describe(self):
        return {"format": self.image.format, "boot_protocol": self.image.protocol_text,
                "version": self.image.version, "boot_path": self.plan.path,
                "boot_reason": self.plan.reason, "root": self.root, "command_line": self.append,
                "icount": self.rr_icount}


def root_kind(image, symbols):
    """'initramfs' when the kernel unpacks a cpio (2.6 on), else 'ext2' (an initrd RAM disk)."""
    if symbols is not None and symbols.address("unpack_to_rootfs") is not None:
        return "initramfs"
    if symbols is not None and symbols.address("populate_rootfs") is not None:
        return "initramfs"
    if image.release and re.match(r"^(1\.|2\.[0-5]\.)", image.release):
        return "ext2"
    if symbols is None or image.format == "elf":
        return "initramfs"
    return "ext2"


def _has_word(cmdline, key):
    return any(w == key or w.startswith(key + "=") for w in cmdline.split())


def prepare_boot(kernel, symbols, workload_elf, command_line, memory_mb, root=None):
    """A BootSetup for a non-lab kernel; root='initramfs'|'ext2'|None (auto)."""
    image = read_image(kernel)
    plan = boot_plan(image)
    if os.environ.get("GDBFAULT_BOOT_PATH") == GRUB and plan.path != GRUB:
        # testing aid: send a modern image down the old-kernel (GRUB) path
        plan = BootPlan(GRUB, f"{plan.reason}; GRUB forced by GDBFAULT_BOOT_PATH", plan.kaslr_possible)
    work = Path(tempfile.mkdtemp(prefix="gdbfault-boot-"))
    try:
        return _fill_setup(BootSetup(kernel=Path(kernel), initrd=[], append="", memory_mb=memory_mb,
                                     work_dir=work, image=image, plan=plan),
                           symbols, workload_elf, command_line, memory_mb, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)      # nothing half-built is left behind
        raise


def _fill_setup(setup, symbols, workload_elf, command_line, memory_mb, root):
    """prepare_boot's work, into `setup` (its work_dir exists)."""
    from gdbfault.kernels.guestroot import write_initramfs, write_initrd_ext2
    image, plan, work, kernel = setup.image, setup.plan, setup.work_dir, setup.kernel
    words = ["console=ttyS0", "panic=-1"]
    if plan.kaslr_possible and not _has_word(command_line, "kaslr"):
        words.append("nokaslr")
    kind = root or root_kind(image, symbols)
    if workload_elf is not None:
        if kind == "initramfs":
            setup.initrd = [write_initramfs(workload_elf, work / "root.cpio")]
            setup.root = "initramfs (newc cpio, /init = workload)"
            words.append("rdinit=/init")
        else:
            setup.initrd = [write_initrd_ext2(workload_elf, work / "root.ext2")]
            setup.root = "ext2 initrd (/init = workload)"
            words += ["root=/dev/ram0", "init=/init"]
    words = [w for w in words if not _has_word(command_line, w.split("=")[0])]
    setup.append = " ".join(words + ([command_line] if command_line else []))
    if image.format != "elf":
        setup.memory_mb = max(memory_mb, MIN_MEMORY_MB)
    setup.replay_from_entry = (plan.path == GRUB or kind == "ext2") and snapshot_store_available()
    if plan.path == GRUB:
        from gdbfault.kernels.grub import build_grub_image, disk_args
        grub, disk = build_grub_image(kernel, setup.initrd[0] if setup.initrd else None,
                                      setup.append, work)
        overlay = snapshot_store(work / "boot.qcow2", disk) if setup.replay_from_entry else None
        setup.kernel, setup.initrd, setup.extra_args = grub, [], disk_args(disk, overlay)
        setup.rr_icount = f"shift={OLD_KERNEL_SHIFT}"
    elif kind == "ext2":
        setup.rr_icount = f"shift={OLD_KERNEL_SHIFT},sleep=off"
        if setup.replay_from_entry:
            state = snapshot_store(work / "state.qcow2")
            setup.extra_args = ["-drive", f"file={state},format=qcow2,if=none,id=gdbfault-state"]
    return setup


def icount_shift(options):
    """The shift N of an -icount option string ('shift=5,sleep=off' -> 5; 0 if none)."""
    m = re.search(r"(?:^|,)shift=(\d+)", options or "")
    return int(m.group(1)) if m else 0


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


def decode_banner(at_symbol, read, pointer_expected=False):
    """(banner text, form, where) from the bytes at linux_banner's address.

    `read(address)` returns guest bytes at an address. The bytes decide:
    "Linux version ..." is the string itself (2.6+); anything else is taken
    as a little-endian pointer to it (2.0 - 2.4) when it points into the
    kernel's half of the address space or the image's era says pointer.
    """
    if at_symbol.startswith(BANNER_PREFIX) or len(at_symbol) < 4:
        return _c_string(at_symbol), ARRAY, None
    target = struct.unpack_from("<I", at_symbol)[0]
    if target and (target >= 0xC0000000 or pointer_expected):
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


def read_banner(dbg, symbols, image):
    """check_banner's check, on a guest already stopped with the kernel up."""
    address = symbols.address(BANNER_SYMBOL)
    if address is None:
        return None
    try:
        banner, form, pointer = decode_banner(read_guest_bytes(dbg, address),
                                              lambda where: read_guest_bytes(dbg, where),
                                              pointer_era(image))
    except GdbfaultError as exc:
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


def truth_model(profile_name, image):
    """Which ground-truth rules (truth.expected_hits) fit a kernel brought as a file.

    The lab kernel packaged as a bzImage (qemu/kernel/variants/oldboot*)
    names its build in its version string, which the banner check ties to
    the running kernel: its fault order is known exactly, as for the ELF
    builds. Any other kernel gets its profile's name (the generic rules).
    """
    build = (image.version or "").rsplit(" ", 1)[-1] if image is not None else ""
    if profile_name == "lab" and build.startswith("oldboot"):
        return "lab-patched" if build.endswith("patched") else "lab-vanilla"
    return profile_name
