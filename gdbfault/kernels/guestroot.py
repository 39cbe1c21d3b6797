"""The guest's root file system for a workload on a real Linux kernel.

The workloads are static, freestanding i386 ELF programs with Linux syscall
numbering; on a real kernel they run as /init (pid 1). They need fd 1 to be
a console, so the root holds a real /dev/console node (char 5, 1).

- `write_initramfs`: a newc ("070701") cpio archive, written here in Python
  (no cpio tool, no root privileges for the device node). Every kernel with
  initramfs support (2.6 on) unpacks it into rootfs and runs /init.
- `write_initrd_ext2`: for kernels older than initramfs (2.0 - 2.4), an ext2
  RAM-disk image (built with Debian's genext2fs, whose device table creates
  /dev/console without root; else mke2fs -d as root), booted with
  `root=/dev/ram0 init=/init` (ext2 revision 0, which 2.0 reads).
"""
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import read_input_bytes
from gdbfault.machine.guardian import watch_dir

__all__ = ["CpioWriter", "write_initramfs", "write_initrd_ext2", "root_entries"]

S_IFDIR, S_IFREG, S_IFCHR = stat.S_IFDIR, stat.S_IFREG, stat.S_IFCHR


def root_entries(init_path):
    """(name, mode, data, (rdev major, minor)) of the workload's root, parents first."""
    init = read_input_bytes(init_path, "workload")
    return [
        ("dev", S_IFDIR | 0o755, b"", None),
        ("dev/console", S_IFCHR | 0o600, b"", (5, 1)),
        ("proc", S_IFDIR | 0o555, b"", None),
        ("sys", S_IFDIR | 0o555, b"", None),
        ("tmp", S_IFDIR | 0o1777, b"", None),
        ("init", S_IFREG | 0o755, init, None),
    ]


class CpioWriter:
    """A minimal newc (SVR4, no CRC) cpio writer — what the kernel's initramfs unpacker reads."""

    def __init__(self, f):
        self.f = f
        self.ino = 721
        self.offset = 0

    def _write(self, data):
        self.f.write(data)
        self.offset += len(data)

    def _pad(self):
        if self.offset % 4:
            self._write(b"\0" * (4 - self.offset % 4))

    def add(self, name, mode, data=b"", rdev=None, mtime=0):
        rmaj, rmin = rdev or (0, 0)
        nlink = 2 if stat.S_ISDIR(mode) else 1
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rmaj, rmin, len(encoded), 0]
        self._write(b"070701" + b"".join(b"%08X" % v for v in fields))
        self._write(encoded)
        self._pad()
        self._write(data)
        self._pad()
        self.ino += 1

    def finish(self):
        encoded = b"TRAILER!!!\0"
        self._write(b"070701" + b"".join(b"%08X" % v for v in
                                         [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(encoded), 0]))
        self._write(encoded)
        self._pad()
        # The kernel reads the archive in 512-byte blocks happily; pad like cpio -H newc does.
        if self.offset % 512:
            self._write(b"\0" * (512 - self.offset % 512))


def write_initramfs(init_path, out_path):
    """A newc initramfs with /init = init_path (0755), /dev/console, /proc ...; returns out_path."""
    out_path = Path(out_path)
    with open(out_path, "wb") as f:
        w = CpioWriter(f)
        for name, mode, data, rdev in root_entries(init_path):
            w.add(name, mode, data, rdev)
        w.finish()
    return out_path


def write_initrd_ext2(init_path, out_path, size_kb=1024):
    """An ext2 RAM-disk image for 2.x-era kernels (root=/dev/ram0 init=/init); returns out_path."""
    out_path = Path(out_path)
    work = Path(tempfile.mkdtemp(prefix="gdbfault-root-"))
    watch_dir(work)
    try:
        tree = work / "root"
        devices = work / "devices.txt"
        tree.mkdir()
        lines = []
        for name, mode, data, rdev in root_entries(init_path):
            target = tree / name
            if stat.S_ISDIR(mode):
                target.mkdir()
                os.chmod(target, stat.S_IMODE(mode))
            elif stat.S_ISREG(mode):
                target.write_bytes(data)
                os.chmod(target, stat.S_IMODE(mode))
            elif stat.S_ISCHR(mode):
                # genext2fs device table: name type mode uid gid major minor start inc count
                lines.append(f"/{name} c {stat.S_IMODE(mode):o} 0 0 {rdev[0]} {rdev[1]} - - -")
        devices.write_text("\n".join(lines) + "\n")
        # Inode times come from the tree: all 0 (deepest first: making an entry dates its folder),
        # so that one workload always makes the same image
        # (genext2fs dates the device table's nodes by the table file's own time)
        for path in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)) + [tree, devices]:
            os.utime(path, (0, 0))
        if shutil.which("genext2fs"):
            # -f: the file system's own times 0 too: the image is guest input, and a run's
            # recording is found again by its digest (recordings/)
            cmd = ["genext2fs", "-f", "-b", str(size_kb), "-N", "64", "-d", str(tree), "-D", str(devices),
                   "-U", str(out_path)]
        elif shutil.which("mke2fs") and os.geteuid() == 0:
            os.mknod(tree / "dev" / "console", S_IFCHR | 0o600, os.makedev(5, 1))
            cmd = ["mke2fs", "-q", "-F", "-t", "ext2", "-r", "0", "-b", "1024", "-N", "64",
                   "-U", "clear", "-E", "hash_seed=00000000-0000-0000-0000-000000000000",
                   "-d", str(tree), str(out_path), str(size_kb)]
        else:
            raise GdbfaultError("cannot build an ext2 initrd for this kernel: genext2fs is missing",
                                "install it with `apt-get install genext2fs`")
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"})
        if done.returncode != 0:
            raise GdbfaultError(f"{cmd[0]} failed building the initrd: "
                                f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_path
