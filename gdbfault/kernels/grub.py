"""Boot an old Linux image (boot protocol < 2.02, or no setup header) through GRUB.

QEMU 7.2's `-kernel` loader corrupts images older than boot protocol 2.02
(it writes initrd_addr_max at 0x22c, still setup code there), so gdbfault hands them to a real bootloader: GRUB 2 from
Debian's `grub-pc-bin`, whose `linux16`/`initrd16` commands implement the
old real-mode protocols (command line at 0x9020, setup at 0x90000).

The parts:

    grub.bin  = lnxboot.img + core.img, loaded by QEMU's `-kernel`
                (`lnxboot.img` is GRUB's own Linux-boot-protocol stub,
                protocol 2.05, so QEMU's loader handles it correctly);
    core.img  = grub-mkimage -O i386-pc with linux16, tar, biosdisk and an
                embedded config: set root=(hd0); linux16 /vmlinuz CMDLINE;
                initrd16 /initrd; boot
    boot.tar  = a plain tar archive holding vmlinuz and initrd, attached as
                a raw IDE disk: GRUB's tar module reads it as a file system
                through the BIOS. (An embedded memdisk would avoid the disk,
                but i386-pc core images are limited to 480 KiB.)

For record/replay the disk goes through QEMU's `blkreplay` driver (the
documented way to make block I/O replayable), with the tar file never
written; `disk_args()` gives the QEMU arguments.
"""
import shutil
import subprocess
import tarfile
from pathlib import Path

from gdbfault.base.errors import GdbfaultError

__all__ = ["GRUB_DIR", "grub_available", "build_grub_image", "disk_args"]

GRUB_DIR = Path("/usr/lib/grub/i386-pc")
MODULES = ["linux16", "biosdisk", "tar", "boot", "echo", "test"]


def grub_available():
    return shutil.which("grub-mkimage") is not None and (GRUB_DIR / "lnxboot.img").is_file() \
        and (GRUB_DIR / "linux16.mod").is_file()


def _grub_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def build_grub_image(kernel, initrd, cmdline, work_dir):
    """(grub.bin, boot.tar) in work_dir: a GRUB that boots `kernel` with `initrd` and `cmdline`."""
    if not grub_available():
        raise GdbfaultError("this kernel image needs a real bootloader (boot protocol < 2.02) "
                            "and GRUB's i386-pc files are missing",
                            "install them with `apt-get install grub-pc-bin`")
    work = Path(work_dir)
    disk = work / "boot.tar"
    with tarfile.open(disk, "w", format=tarfile.USTAR_FORMAT) as tar:
        # The disk is guest input: the same files make the same bytes (no time, owner or mode
        # of the day), so that a run's recording is found again by its digest (recordings/).
        tar.add(str(kernel), arcname="vmlinuz", filter=_plain_member)
        if initrd:
            tar.add(str(initrd), arcname="initrd", filter=_plain_member)
    words = " ".join(_grub_quote(w) for w in cmdline.split())
    config = work / "grub-early.cfg"
    config.write_text("set root=(hd0)\n"
                      f"linux16 /vmlinuz {words}\n"
                      + ("initrd16 /initrd\n" if initrd else "")
                      + "boot\n"
                      "echo 'gdbfault: GRUB could not boot the kernel'\n")
    core = work / "core.img"
    cmd = ["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_DIR), "-o", str(core),
           "-c", str(config), "-p", "(hd0)/", *MODULES]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise GdbfaultError(f"grub-mkimage failed: {(done.stderr or done.stdout).strip()}")
    image = work / "grub.bin"
    image.write_bytes((GRUB_DIR / "lnxboot.img").read_bytes() + core.read_bytes())
    core.unlink()                        # (both are in grub.bin: the guest folder holds what QEMU reads)
    config.unlink()
    return image, disk


def _plain_member(info):
    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
    return info


def disk_args(disk, overlay=None):
    """QEMU arguments attaching `disk` (boot.tar) as a replayable IDE disk.

    The tar file is never written: the guest writes go to a throw-away
    overlay (snapshot=on), or to `overlay`, a qcow2 file backed by the tar
    (qemu.snapshot_store), which can also keep `savevm` snapshots."""
    direct = (f"file={overlay},format=qcow2" if overlay is not None
              else f"file={disk},format=raw,snapshot=on")
    return ["-drive", f"{direct},if=none,id=gdbfault-boot-direct",
            "-drive", "driver=blkreplay,if=none,image=gdbfault-boot-direct,id=gdbfault-boot",
            "-device", "ide-hd,drive=gdbfault-boot,bus=ide.0"]
