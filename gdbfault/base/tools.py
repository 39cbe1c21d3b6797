"""The outside programs gdbfault drives (QEMU, GDB): finding them, their versions, tying them to gdbfault."""
import functools
import re
import shutil
import subprocess

from gdbfault.base.errors import GdbfaultError

__all__ = ["find_tool", "tool_version", "parent_death_prefix"]

# Which Debian package brings each program, for the error message.
_PACKAGES = {"gdb": "gdb", "qemu-system-i386": "qemu-system-x86", "qemu-system-x86_64": "qemu-system-x86"}


def find_tool(name):
    """The full path of a program, or a one-line error saying how to install it."""
    exe = shutil.which(name)
    if not exe:
        package = _PACKAGES.get(name)
        hint = (f"install it with `apt-get install {package}` or run `make setup`" if package
                else "run `make setup`")
        raise GdbfaultError(f"'{name}' not found on PATH", hint)
    return exe


def tool_version(name, pattern):
    """The version a program prints for --version (first group of `pattern`)."""
    return _version_of(find_tool(name), pattern)


@functools.lru_cache(maxsize=None)
def _version_of(exe, pattern):
    # Asked once per program and process: every run records both versions,
    # and a `compare`, `check` or bench runs many.
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    m = re.search(pattern, out)
    return m.group(1) if m else "unknown"


def parent_death_prefix():
    """A command prefix that has the kernel kill the program when gdbfault dies.

    A SIGKILL of gdbfault runs no handler, so no teardown: without this the
    QEMU and GDB it started (in a session of its own) would run on, orphaned.
    `setpriv --pdeathsig KILL` (util-linux) sets PR_SET_PDEATHSIG and then
    execs the program, which keeps the pid. The kernel sends the signal when
    the thread that started the program ends: every run starts and ends its
    QEMU and GDB in one thread (compare's runs each in a worker thread of their own).
    Without setpriv the prefix is empty and nothing else changes.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
