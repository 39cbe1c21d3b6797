"""Booting a kernel the user brings (not the lab kernel), and checking it.

`prepare_boot()` turns (kernel image, workload, command line) into what QEMU
needs: it reads the image header (image.py), builds the guest's root for
the workload (guestroot.py), chooses the boot path — QEMU `-kernel` for ELF and
protocol >= 2.02 images, the vmlinux inside an x86_64 bzImage through its PVH
entry (no decompressor in the guest), GRUB for older ones (grub.py) — and
completes the command line (`console=ttyS0`, `panic=-1`, `nokaslr` where the
image may randomise its base, `root=/dev/ram0 init=/init` for an ext2 initrd,
`norandmaps` from 2.6.25 on, `sysctl.debug.exception-trace=0` on 5.8+
kernels). `guest_memory_mb()` decides the guest's RAM, and refuses too little
for the image before anything boots.

Once the kernel is up, banner.py checks that the System.map is this kernel's.
"""
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.kernels.image import GRUB, PVH, QEMU_KERNEL, X86_64, BootPlan, boot_plan, extract_vmlinux, \
    read_image
from gdbfault.machine.guardian import watch_dir
from gdbfault.machine.qemu import place, snapshot_store, snapshot_store_available

__all__ = ["BootSetup", "prepare_boot", "root_kind", "truth_model", "icount_shift", "guest_memory_mb",
           "MIN_MEMORY_MB", "LAB_MEMORY_MB", "OLD_KERNEL_SHIFT", "OLD_KERNEL_RTC"]

MIN_MEMORY_MB = 256        # a modern distribution kernel wants >= 128 MB; 256 leaves room
LAB_MEMORY_MB = 64         # the lab kernel (and a multiboot kernel) by default
# Beyond what the image says it needs unpacked, the kernel's first allocations:
# Debian's amd64 6.1 bzImage needs pref_address + init_size = 80 MiB; with -m 64 it
# triple-faults in its decompressor (QEMU exits 0 with an empty console), with
# -m 80 it panics ("System is deadlocked on memory"), with -m 96 it runs.
MEMORY_HEADROOM_MB = 16
_MIB = 1 << 20
# -icount shift for pre-2.6 kernels and the GRUB path: 2**7 = 128 ns of guest
# time per instruction (a ~7.8 MHz CPU). Old boots busy-wait on time (GRUB's
# TSC calibration against the PIT, BogoMIPS-calibrated udelay, IDE probe
# timeouts of empty interfaces), and every guest nanosecond of such waiting is
# emulated instructions: at shift=0 one per ns (the oldboot fixture's boot to
# power-off took 53 s), at shift=5 one per 32 ns (3.3 s), at shift=7 one per
# 128 ns (1.1 s), with the same counts, path shapes and minimum and median
# path costs. Path costs stay in instructions (query-replay counts
# instructions whatever the shift); the guest's rdtsc counts 128 per one, and
# a 100 Hz tick comes every 78k instructions, so a path's maximum holds one
# more often. (Shift 7 was first seen to stall the GRUB path 35-50 s in
# SeaBIOS's disk reads now and then, in boots under sleep=off, where an idle
# guest's clock jumps ahead of a disk read the host has not finished; the
# GRUB path records under sleep=on, and 84 runs of it under load showed none.)
OLD_KERNEL_SHIFT = 7
# Old kernels' RTC follows the virtual clock from a fixed date. With the host
# clock (QEMU's default) every read of the CMOS clock (2.x's get_cmos_time
# polls its update-in-progress bit up to a million times) is a host-clock
# event that a recording logs and its replay stops for: 0.4-2 M events and a
# 5-23 MB log on the oldboot fixture, a power-on replay 3x slower; and the
# wait's length followed the host. With the virtual clock a boot under
# sleep=off (the -kernel path) is the same, instruction for instruction, every
# run (the guest's date is 2000-01-01).
OLD_KERNEL_RTC = ["-rtc", "base=2000-01-01T00:00:00,clock=vm"]


@dataclass
class BootSetup:
    kernel: Path                   # what QEMU's -kernel gets
    initrd: list
    append: str
    memory_mb: int
    extra_args: list = field(default_factory=list)
    work_dir: Path = None          # remove after the run
    image: object = None           # kernels.image.KernelImage
    plan: object = None            # kernels.image.BootPlan
    root: str = None               # "initramfs (newc cpio)" or "ext2 initrd"
    # -icount for record/replay. sleep=off warps virtual time over idle periods
    # instead of following the host clock: on a Debian 6.1 boot the record file
    # shrinks from 166 MB to 1.7 MB and the replay from ~5 min to ~30 s. The GRUB
    # path keeps sleep=on: with its blkreplay disk, rr=record + sleep=off hung here.
    rr_icount: str = "shift=0,sleep=off"
    # Old kernels (pre-2.6: GRUB or ext2 initrd) boot slowly and busy-wait, so
    # their replay starts from a snapshot taken at the workload's entry in the
    # recording, instead of replaying the boot (backends/recording.py). The snapshot lives
    # in a qcow2 file: the boot disk's overlay, or one attached to no device.
    replay_from_entry: bool = False
    # The qcow2 file in work_dir that the boot's disk arguments attach and that can hold
    # VM snapshots (GRUB's overlay); None: a record/replay attaches one of its own.
    store: str = None
    vmlinux: Path = None           # the vmlinux a PVH boot runs (decompressed once, cached)

    def describe(self):
        out = {"format": self.image.format, "boot_protocol": self.image.protocol_text,
               "version": self.image.version, "arch": self.image.arch, "boot_path": self.plan.path,
               "boot_reason": self.plan.reason, "root": self.root, "command_line": self.append,
               "icount": self.rr_icount, "memory_mb": self.memory_mb}
        if self.plan.path == PVH:
            out["vmlinux"] = str(self.vmlinux or self.kernel)
        return out


def guest_memory_mb(requested, image, initrd_bytes=0, lab=False):
    """The guest's RAM in MiB: `requested` (--memory) if the image fits in it, else a one-line
    GdbfaultError before anything boots; None: LAB_MEMORY_MB for the lab kernel, otherwise
    MIN_MEMORY_MB or what the image needs if more. `image`: a kernels.image.KernelImage."""
    floor = image.memory_floor_bytes() if image is not None else None
    need = -(-(floor + initrd_bytes) // _MIB) + MEMORY_HEADROOM_MB if floor else None
    if requested is None:
        return max(LAB_MEMORY_MB if lab else MIN_MEMORY_MB, need or 0)
    if need is not None and requested < need:
        raise GdbfaultError(f"--memory {requested} is too little for {Path(image.path).name}: it needs at "
                            f"least {need} MiB (the kernel unpacked up to {floor / _MIB:.0f} MiB, the "
                            f"workload's root and {MEMORY_HEADROOM_MB} MiB for its first allocations)",
                            f"give --memory {max(need, MIN_MEMORY_MB)} or more, or leave --memory out")
    return requested


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


def _release_at_least(release, version):
    """Is kernel release `release` ("6.1.0-57-amd64", "2.6.32-5-686") at least `version`, a tuple
    (major, minor[, patch])?"""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    return bool(m) and tuple(int(g or 0) for g in m.groups())[:len(version)] >= version


def _has_word(cmdline, key):
    return any(w == key or w.startswith(key + "=") for w in cmdline.split())


def prepare_boot(kernel, symbols, workload_elf, command_line, memory_mb, root=None):
    """A BootSetup for a non-lab kernel; root='initramfs'|'ext2'|None (auto)."""
    image = read_image(kernel)
    plan = boot_plan(image)
    boot_kernel, kernel_name = Path(kernel), "bzImage" if image.format == "bzImage" else "kernel.img"
    vmlinux = None
    forced = os.environ.get("GDBFAULT_BOOT_PATH")
    if forced == GRUB and plan.path != GRUB:
        # testing aid: send a modern image down the old-kernel (GRUB) path
        plan = BootPlan(GRUB, f"{plan.reason}; GRUB forced by GDBFAULT_BOOT_PATH", plan.kaslr_possible)
    elif plan.path == QEMU_KERNEL and image.arch == X86_64 and image.format == "bzImage" \
            and forced != QEMU_KERNEL:          # (GDBFAULT_BOOT_PATH=qemu-kernel boots the bzImage itself)
        vmlinux = extract_vmlinux(image)
        if vmlinux is not None:
            # Its decompressor is the only code the guest skips: no instruction
            # of the workload's or of the kernel's fault path changes.
            plan = BootPlan(PVH, "x86_64 bzImage: its vmlinux (decompressed once by gdbfault, cached) booted "
                                 "through its PVH entry, without the guest's decompressor", True)
            boot_kernel, kernel_name = vmlinux, "vmlinux.elf"
    # The guest folder (machine/config.py): every file QEMU reads, under a fixed name.
    work = Path(tempfile.mkdtemp(prefix="gdbfault-boot-"))
    watch_dir(work)
    try:
        if plan.path != GRUB:            # (GRUB reads the kernel from its boot disk)
            boot_kernel = work / place(boot_kernel, work, kernel_name)
        return _fill_setup(BootSetup(kernel=boot_kernel, initrd=[], append="", memory_mb=memory_mb,
                                     work_dir=work, image=image, plan=plan,
                                     vmlinux=vmlinux if plan.path == PVH else None),
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
    if _release_at_least(image.release, (2, 6, 25)):
        # No address-space randomisation: where the workload's stack starts decides whether
        # its first signal frame spans a page not yet mapped (an extra fault or two in the
        # first iteration, in some runs and not others); without it every run of an image
        # is the same computation, and two backends' independent runs agree fault for fault.
        words.append("norandmaps")
    if _release_at_least(image.release, (5, 8)):
        # (sysctl.* boot parameters exist from 5.8 on) pid 1's SIGSEGVs are all
        # "unhandled": without this the kernel logs the first ones, rate-limited,
        # thousands of instructions each, inside the workload's first iterations.
        words.append("sysctl.debug.exception-trace=0")
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
    setup.replay_from_entry = (plan.path == GRUB or kind == "ext2") and snapshot_store_available()
    if plan.path == GRUB:
        from gdbfault.kernels.grub import build_grub_image, disk_args
        grub, disk = build_grub_image(kernel, setup.initrd[0] if setup.initrd else None,
                                      setup.append, work)
        overlay = snapshot_store(work / "boot.qcow2", disk) if snapshot_store_available() else None
        setup.kernel, setup.initrd = grub, []
        setup.extra_args = disk_args(disk.name, overlay.name if overlay is not None else None) + OLD_KERNEL_RTC
        setup.store = overlay.name if overlay is not None else None
        setup.rr_icount = f"shift={OLD_KERNEL_SHIFT}"
    elif kind == "ext2":
        setup.rr_icount = f"shift={OLD_KERNEL_SHIFT},sleep=off"
        setup.extra_args = list(OLD_KERNEL_RTC)
    return setup


def icount_shift(options):
    """The shift N of an -icount option string ('shift=5,sleep=off' -> 5; 0 if none)."""
    m = re.search(r"(?:^|,)shift=(\d+)", options or "")
    return int(m.group(1)) if m else 0


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
