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
A kernel that is not where its map says (KASLR, or the map of another
build) fails there with one line naming both.
"""
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.bootimage import GRUB, BootPlan, boot_plan, read_image
from gdbfault.errors import GdbfaultError

__all__ = ["BootSetup", "prepare_boot", "apply_boot", "check_banner", "banner_matches", "root_kind",
           "MIN_MEMORY_MB"]

MIN_MEMORY_MB = 256        # a modern distribution kernel wants >= 128 MB; 256 leaves room
BANNER_SYMBOL = "linux_banner"


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

    def describe(self):
        return {"format": self.image.format, "boot_protocol": self.image.protocol_text,
                "version": self.image.version, "boot_path": self.plan.path,
                "boot_reason": self.plan.reason, "root": self.root, "command_line": self.append}


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
    from gdbfault.guestroot import write_initramfs, write_initrd_ext2
    image = read_image(kernel)
    plan = boot_plan(image)
    if os.environ.get("GDBFAULT_BOOT_PATH") == GRUB and plan.path != GRUB:
        # testing aid: send a modern image down the old-kernel (GRUB) path
        plan = BootPlan(GRUB, f"{plan.reason}; GRUB forced by GDBFAULT_BOOT_PATH", plan.kaslr_possible)
    work = Path(tempfile.mkdtemp(prefix="gdbfault-boot-"))
    setup = BootSetup(kernel=Path(kernel), initrd=[], append="", memory_mb=memory_mb,
                      work_dir=work, image=image, plan=plan)
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
    if plan.path == GRUB:
        from gdbfault.grubboot import build_grub_image, disk_args
        grub, disk = build_grub_image(kernel, setup.initrd[0] if setup.initrd else None,
                                      setup.append, work)
        setup.kernel, setup.initrd, setup.extra_args = grub, [], disk_args(disk)
        setup.rr_icount = "shift=0"
    return setup


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


def read_guest_string(dbg, address, size=256):
    """A NUL-terminated string from guest memory at `address`, through GDB/MI."""
    rec, _ = dbg.mi(f"-data-read-memory-bytes {address:#x} {size}")
    blocks = (rec.get("payload") or {}).get("memory") or []
    data = b"".join(bytes.fromhex(b.get("contents", "")) for b in blocks)
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


def check_banner(dbg, symbols, image, stop_at, timeout=600.0):
    """Stop once at `stop_at` (the workload's entry), check the banner, stay stopped.

    Returns the banner string, or None when the map has no linux_banner.
    Raises a one-line GdbfaultError on a mismatch.
    """
    address = symbols.address(BANNER_SYMBOL)
    if address is None or stop_at is None:
        return None
    rec, _ = dbg.mi(f"-break-insert -t *{stop_at:#x}")
    number = str(((rec.get("payload") or {}).get("bkpt") or {}).get("number"))
    dbg.mi("-exec-continue")
    stopped = dbg.wait_event(lambda r: r.get("message") == "stopped" and (
        str((r.get("payload") or {}).get("bkptno")) == number
        or (r.get("payload") or {}).get("reason") in ("exited", "exited-normally", "signal-received")),
        timeout)
    if stopped is not None and str((stopped.get("payload") or {}).get("bkptno")) != number:
        raise GdbfaultError(f"the kernel stopped before the workload started "
                            f"({(stopped.get('payload') or {}).get('reason')})")
    if stopped is None:
        raise GdbfaultError(f"the kernel never started the workload (no stop at its entry "
                            f"{stop_at:#x} within {timeout:.0f} s)")
    try:
        banner = read_guest_string(dbg, address).strip()
    except GdbfaultError as exc:
        raise GdbfaultError(f"cannot read {BANNER_SYMBOL} at {address:#x} from guest memory to check "
                            f"the System.map: {str(exc).splitlines()[0]}")
    if not banner_matches(banner, image.version):
        image_says = image.version or "(no version string in the image)"
        hint = (" — KASLR moved the kernel? boot with nokaslr" if image.relocatable and
                "nokaslr" not in banner else "")
        raise GdbfaultError(f"System.map does not match the running kernel: at {BANNER_SYMBOL} "
                            f"({address:#x}) guest memory holds {banner[:90]!r}, the image "
                            f"{image.path.name} is {image_says[:90]!r}{hint}",
                            f"give the System.map of this very build ({symbols.source})")
    return banner


def apply_boot(config, boot):
    """Point a qemu.MachineConfig at what prepare_boot() built (no-op for boot=None)."""
    if boot is not None:
        config.kernel, config.initrd, config.append = boot.kernel, list(boot.initrd), boot.append
        config.memory_mb, config.extra_args = boot.memory_mb, list(boot.extra_args)
        config.rr_icount = boot.rr_icount       # record and replay use it (run.py)
    return config
