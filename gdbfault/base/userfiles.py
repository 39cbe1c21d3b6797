"""The files a user names: every input is bounded before it is read, every output checked before the work.

Inputs. A path the user gives can be anything: a directory, /dev/zero, a
FIFO, a 2 GB sparse file. Reading such a thing whole took 24 GB of memory
and ignored every signal until the OOM killer came (`gdbfault report
/dev/zero`). So every reader goes through `input_file()` first: it must be
a regular file (after symlinks) no larger than its kind's limit (`LIMITS`);
`read_input_bytes`/`read_input_text` then read at most that many bytes,
so a file that grows while it is read (or one whose size the kernel does
not know, like a /proc file) cannot get past the limit either. Any problem
is one line, exit 2.

Outputs. `check_output_file()` and `check_output_dir()` run before anything
boots: a path that is a directory (or a file, for a folder), a folder that
does not exist, or a place that cannot be written — a read-only folder, a
read-only mount, for root too — is refused at once instead of after the
run (when a traceback and a `.tmp` file were all that was left). Writability
is tried, not guessed: os.access() says yes to root on a read-only mount.
"""
import errno
import os
import stat
import tempfile
from pathlib import Path

from gdbfault.base.errors import GdbfaultError

__all__ = ["LIMITS", "input_file", "read_input_bytes", "read_input_text", "open_input", "human_size",
           "check_output_file", "check_output_dir"]

MB = 1 << 20
# The largest file of each kind gdbfault reads, and what the kind is called in an error.
LIMITS = {
    "run": (256 * MB, "run file"),                   # a saved run (JSON), --use files, compare output
    "spec": (1 * MB, "check spec"),
    "profile": (1 * MB, "probe profile"),
    "system_map": (64 * MB, "System.map"),           # Debian 6.1's is 3 MB
    "image": (512 * MB, "kernel image"),             # a vmlinux with debug info is ~300 MB
    "patch": (16 * MB, "live patch"),                # a patch or a relocatable object
    "workload": (64 * MB, "workload"),               # a static i386 program
    "internal": (256 * MB, "file"),                  # what gdbfault's own parts wrote (counts, plugin results)
}


def human_size(n):
    """1536 -> '1.5 KB'; 3 << 30 -> '3.0 GB'."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _kind(kind):
    try:
        return LIMITS[kind]
    except KeyError:
        raise ValueError(f"unknown input kind {kind!r}") from None


def _file_type(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def input_file(path, kind, what=None):
    """`path` as a Path once it is known to be a regular file within its kind's limit.

    `what` names the file in an error (default: the kind's name, e.g. "System.map")."""
    limit, name = _kind(kind)
    what = what or name
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GdbfaultError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise GdbfaultError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise GdbfaultError(f"{path} is {_file_type(st.st_mode)}, not a {what}")
    if st.st_size > limit:
        raise GdbfaultError(f"{path} is {human_size(st.st_size)}: too large for a {what} "
                            f"(at most {human_size(limit)})")
    return path


def open_input(path, kind, what=None):
    """input_file(), then the file opened for reading in binary (for readers that seek, like pyelftools)."""
    path = input_file(path, kind, what)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise GdbfaultError(f"cannot read {what or _kind(kind)[1]} {path}: {exc.strerror or exc}") from None


def read_input_bytes(path, kind, what=None):
    """The bytes of an input file, checked first and read up to its kind's limit (never more)."""
    limit, name = _kind(kind)
    with open_input(path, kind, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise GdbfaultError(f"cannot read {what or name} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:        # it grew, or its size was not known (a /proc file)
        raise GdbfaultError(f"{path} is larger than a {what or name} can be (at most {human_size(limit)})")
    return data


def read_input_text(path, kind, what=None, errors="strict"):
    """An input file as UTF-8 text (checked and bounded as read_input_bytes); one line when it is not text."""
    data = read_input_bytes(path, kind, what)
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError:
        raise GdbfaultError(f"{path} is not a {what or _kind(kind)[1]} (not text: a binary file?)") from None


def _try_write_in(folder, option, target):
    """Create and remove a scratch file in `folder`: the one check that is right for root and read-only mounts."""
    try:
        fd, scratch = tempfile.mkstemp(prefix=".gdbfault-check-", dir=folder)
    except OSError as exc:
        why = "a read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc)).lower()
        raise GdbfaultError(f"{option} {target} is not writable ({why})") from None
    os.close(fd)
    os.unlink(scratch)


def check_output_file(path, option="--output"):
    """Refuse, before any work, an output file that cannot be written: one line, exit 2."""
    path = Path(path)
    if path.is_dir():
        raise GdbfaultError(f"{option} {path} is a directory", "give a file name")
    if path.exists() and not path.is_file():
        raise GdbfaultError(f"{option} {path} is {_file_type(path.stat().st_mode)}, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise GdbfaultError(f"{option} {path}: folder {parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise GdbfaultError(f"{option} {path} is not writable (permission denied)")
    _try_write_in(parent, option, path)


def check_output_dir(path, option):
    """Refuse, before any work, an output folder that cannot be made or written: one line, exit 2.
    A folder that does not exist yet is fine when it can be made (it is, at the end)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GdbfaultError(f"{option} {path}: {existing} is not a folder")
    _try_write_in(existing, option, path)
