"""The QEMU side of a run: one `Machine` = one supervised qemu-system-i386 or qemu-system-x86_64.

Which emulator a run needs follows its kernel (kernels/arch.py); `emulator_target`
says which guest architecture a QEMU binary emulates, and `CPU_MODELS` pins the
CPU model each one runs (path costs depend on it: another model brings another
FPU state size, and Intel models turn on the kernel's page-table isolation).

The gdbstub and QMP listen on unix sockets inside a private (0700) run
directory, never on a TCP port reachable from elsewhere; the serial console
goes to a file there. QEMU starts halted (-S) so that probes are armed before
the first guest instruction runs, and `close()` always leaves no process
behind, whatever happened.
"""
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.base.lifecycle import check_stop, shielded
from gdbfault.base.tools import find_tool, parent_death_prefix, tool_version
from gdbfault.machine.guardian import watch_dir

__all__ = ["MachineConfig", "Machine", "qemu_version", "emulator_target", "EMULATORS", "CPU_MODELS",
           "describe_exit", "guest_args", "place", "private_base", "private_dir",
           "qemu_opt_escape", "snapshot_store", "snapshot_store_available", "ENDED_AFTER_RESULT", "EXIT_CLEAN", "EXIT_INIT_EXITED", "EXIT_OOPS", "EXIT_PANIC"]

# QEMU exit statuses the lab kernel produces (qemu/README.md).
EXIT_CLEAN = 0          # reboot() with -no-reboot
EXIT_INIT_EXITED = 3    # isa-debug-exit value 1
EXIT_OOPS = 29          # isa-debug-exit value 0x0e
EXIT_PANIC = 31         # isa-debug-exit value 0x0f
DEBUG_EXIT_PORT = 0xF4
# How a run reads when gdbfault ended the guest itself once its result was out.
ENDED_AFTER_RESULT = "ended by gdbfault after the workload's result line"
# The emulator for each guest architecture, and the CPU model pinned on it: each
# emulator's own default model, named so that a newer QEMU with another default
# cannot change the figures (qemu64 is an AMD-flavoured CPU with FXSAVE and no
# Meltdown: Linux leaves page-table isolation off on it; `--append pti=on` turns it on).
EMULATORS = {"i386": "qemu-system-i386", "x86_64": "qemu-system-x86_64"}
CPU_MODELS = {"i386": "qemu32", "x86_64": "qemu64"}


@dataclass

class MachineConfig:
    """What to boot and how. Lists are argv pieces, never shell strings."""

    kernel: Path
    initrd: list = field(default_factory=list)
    append: str = ""
    memory_mb: int = 64
    icount: bool = True
    icount_options: str = "shift=0"
    # -icount options a record and its replay run under (then ",rr=record|replay,rrfile=F");
    # a kernel's boot setup may ask for more (config.py).
    rr_icount: str = "shift=0"
    extra_args: list = field(default_factory=list)
    qemu: str = "qemu-system-i386"
    cpu: str = None           # -cpu MODEL (CPU_MODELS); None: the emulator's default
    halted: bool = True       # -S: wait for the debugger before running
    # A second QMP socket for gdbfault's own reads (the replay watchdog of a
    # live patch) while the in-GDB tracer holds the first one.
    watch_qmp: bool = False
    # The guest folder QEMU runs in (None: gdbfault's own). The guest's files
    # are named relative to it: QEMU writes a multiboot kernel's and module's
    # names as given into guest memory, so a recording replays only under the
    # very same names (machine/config.py, recordings/).
    cwd: Path = None
    # The qcow2 file (in `cwd`) that the boot's own disk arguments attach and that
    # holds VM snapshots (GRUB's boot disk overlay); None: record/replay attach one
    # of their own (config.STATE_STORE).
    store: str = None


def guest_args(config):
    """QEMU's argv for the guest itself: what it runs and how (machine, files, command line,
    icount, the extra arguments), without what only gdbfault uses to watch it. Two runs with
    the same guest_args and the same files run the same guest."""
    c = config
    argv = [c.qemu, "-m", str(c.memory_mb), "-nodefaults", "-no-reboot", "-kernel", str(c.kernel),
            "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
    if c.initrd:
        argv += ["-initrd", ",".join(qemu_opt_escape(p) for p in c.initrd)]
    if c.append:
        argv += ["-append", c.append]
    if c.cpu:
        argv += ["-cpu", c.cpu]
    if c.icount:
        argv += ["-icount", c.icount_options]
    return argv + [str(a) for a in c.extra_args]


def place(source, folder, name):
    """`folder`/`name` made to hold the file `source` (a hard link where the file system allows,
    else a symbolic link to its real path; nothing when it is that file already); the name."""
    source, target = Path(source), Path(folder) / name
    if target.exists() and os.path.samefile(source, target):
        return name
    target.unlink(missing_ok=True)
    try:
        os.link(source.resolve(), target)
    except OSError:
        target.symlink_to(source.resolve())
    return name


def describe_exit(status):
    """One phrase for a QEMU exit status."""
    if status is None:
        return "still running"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"QEMU was killed ({name})"
    return {
        EXIT_CLEAN: "guest powered off cleanly",
        EXIT_INIT_EXITED: "guest's init exited",
        EXIT_OOPS: "guest kernel oopsed",
        EXIT_PANIC: "guest kernel panicked",
    }.get(status, f"QEMU exited with status {status}")


# Characters a run directory may have: QEMU's option syntax reads ',' as a
# separator and GDB's `target remote` stops at white space, so a temp dir with
# either cannot hold the sockets. Unix socket paths are limited to 107 bytes.
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+-]+")
_MAX_BASE = 64
_FALLBACK_BASES = ("/tmp", "/var/tmp", "/dev/shm")


def _usable_base(path):
    return (_SAFE_PATH.fullmatch(str(path)) is not None and len(str(path)) <= _MAX_BASE
            and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK))


def private_base():
    """Where run directories go: the temp dir, or a plain fallback when its path
    has characters QEMU or GDB cannot take (a space, a comma) or is too long."""
    base = tempfile.gettempdir()
    if _usable_base(base):
        return Path(base)
    for fallback in _FALLBACK_BASES:
        if _usable_base(fallback):
            return Path(fallback)
    raise GdbfaultError(f"the temp directory {base!r} cannot hold QEMU's sockets (white space, a comma "
                        "or a long path) and no plain fallback is writable", "set TMPDIR to a plain path")


def private_dir(prefix="gdbfault-run-"):
    """A new 0700 directory under private_base() (the caller removes it; the guardian does if
    gdbfault is killed first)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=private_base()))
    watch_dir(folder)
    return folder


def qemu_opt_escape(value):
    """A QEMU option value escapes a comma by doubling it."""
    return str(value).replace(",", ",,")


def snapshot_store_available():
    return shutil.which("qemu-img") is not None


def snapshot_store(path, backing=None, backing_format="raw"):
    """A qcow2 file at `path` that can hold `savevm` snapshots (QEMU keeps VM
    snapshots only in qcow2): an overlay of `backing` (which is never
    written), or an empty 1 MiB image attached to no device. A backing file
    in the same folder is named relatively, so that the folder can move."""
    path = Path(path)
    cmd = [find_tool("qemu-img"), "create", "-q", "-f", "qcow2"]
    if backing is not None:
        backing = Path(backing)
        same = backing.resolve().parent == path.resolve().parent
        cmd += ["-b", backing.name if same else str(backing.resolve()), "-F", backing_format]
    cmd += [path.name] + ([] if backing is not None else ["1M"])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=path.resolve().parent)
    if done.returncode != 0:
        raise GdbfaultError(f"qemu-img could not make {path}: {(done.stderr or done.stdout).strip()}")
    return Path(path)


def qemu_version(qemu="qemu-system-i386"):
    """'7.2.22' or similar; raises a clear error when QEMU is missing."""
    return tool_version(qemu, r"version (\S+)")


_TARGET_NAME = re.compile(r"^qemu-system-(\w+)$")


@functools.lru_cache(maxsize=None)
def emulator_target(qemu):
    """The guest architecture a QEMU system emulator emulates ("i386", "x86_64", ...).

    Read from its name (qemu-system-ARCH) when it has the usual one; else asked
    (QMP query-target, with no machine: nothing boots). A one-line error when
    the program is missing or does not answer like a QEMU system emulator."""
    name = Path(qemu).name
    m = _TARGET_NAME.match(name)
    if m:
        return m.group(1)
    exe = find_tool(qemu)
    talk = b'{"execute":"qmp_capabilities"}\n{"execute":"query-target"}\n{"execute":"quit"}\n'
    try:
        done = subprocess.run([exe, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"],
                              input=talk, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GdbfaultError(f"{qemu} did not say which architecture it emulates ({exc})")
    for line in done.stdout.decode(errors="replace").splitlines():
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        arch = (reply.get("return") or {}).get("arch") if isinstance(reply.get("return"), dict) else None
        if arch:
            return arch
    raise GdbfaultError(f"{qemu} is not a QEMU system emulator gdbfault can use (no answer to QMP "
                        "query-target)", "give qemu-system-i386 or qemu-system-x86_64")


class Machine:
    """One QEMU process (qemu-system-i386 or -x86_64), its run directory and its sockets."""

    def __init__(self, config, run_dir=None, own_dir=None):
        """`run_dir`: a folder made beforehand (files the config names live there, e.g. a plugin's);
        the Machine removes it at close() when `own_dir` (default: only a folder it named itself)."""
        self.config = config
        self._own_dir = run_dir is None if own_dir is None else own_dir
        # The directory is named now and made by prepare()/start(): a Machine
        # that is never started leaves nothing behind.
        self.run_dir = Path(run_dir) if run_dir else private_base() / f"gdbfault-run-{secrets.token_hex(6)}"
        self.stopped_by_us = False     # close() had to end a QEMU that was still running
        self.ended_after_result = False   # end_after_result() ended it, as planned
        self.gdb_socket = self.run_dir / "gdb.sock"
        self.probe_qmp_socket = self.run_dir / "qmp-probes.sock"   # for the in-GDB path tracer
        self.watch_qmp_socket = self.run_dir / "qmp-watch.sock"    # with config.watch_qmp
        self.serial_log = self.run_dir / "serial.log"
        self.stderr_log = self.run_dir / "qemu.err"
        self.proc = None
        self._watch = None             # QMP client on the watch socket, once replay_icount() asked

    # -- launching ---------------------------------------------------------
    def prepare(self):
        """Make the private run directory (idempotent)."""
        self.run_dir.mkdir(mode=0o700, parents=False, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        if self._own_dir:
            watch_dir(self.run_dir)
        return self.run_dir

    def command(self):
        """The full argv QEMU is started with: the guest's (guest_args) and how gdbfault
        reaches it (console file, gdbstub, QMP, -S)."""
        c = self.config
        base = Path(c.cwd) if c.cwd is not None else Path()
        kernel = Path(c.kernel)
        if not (base / kernel).is_file():
            raise GdbfaultError(f"kernel file not found: {base / kernel}")
        for path in c.initrd:
            if not (base / path).is_file():
                raise GdbfaultError(f"initrd/module file not found: {base / path}")
        argv = guest_args(c)
        argv[1:1] = ["-serial", f"file:{self.serial_log}",
                     "-gdb", f"unix:{self.gdb_socket},server=on,wait=off",
                     "-qmp", f"unix:{self.probe_qmp_socket},server=on,wait=off",
                     "-monitor", "none", "-display", "none"]
        if c.watch_qmp:
            argv += ["-qmp", f"unix:{self.watch_qmp_socket},server=on,wait=off"]
        if c.halted:
            argv.append("-S")
        return argv

    def start(self, timeout=20.0):
        """Start QEMU and wait until its gdbstub socket exists (a stop signal ends the wait)."""
        argv = self.command()
        exe = find_tool(argv[0])
        self.prepare()
        with open(self.stderr_log, "wb") as err:
            # A session of its own: the user's Ctrl-C reaches us, and we tear
            # QEMU down in order instead of racing its own SIGINT handler.
            self.proc = subprocess.Popen(parent_death_prefix() + [exe] + argv[1:], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, cwd=self.config.cwd,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self._ran_to_its_end():
                    return self          # a short guest, over before we looked: its caller reads how it ended
                raise GdbfaultError(f"QEMU died at launch ({describe_exit(self.proc.returncode)}): "
                                    f"{self.stderr_tail() or 'no message'}")
            if self.gdb_socket.exists() and self.probe_qmp_socket.exists():
                return self
            check_stop()
            time.sleep(0.02)
        raise GdbfaultError(f"QEMU did not open its gdbstub within {timeout:.0f} s")

    def _ran_to_its_end(self):
        """A QEMU that was not halted and is gone already: did its guest run (and print)?
        (QEMU removes its sockets as it exits, so a guest done in milliseconds looks like
        one that never started.)"""
        return not self.config.halted and bool(self.serial_output())

    def wait_ready(self, timeout=20.0):
        """Until QEMU's main loop serves its QMP socket: its start-up (a VM
        snapshot to start from included) is done. Its sockets exist before
        that, and a debugger that connects early meets a gdbstub that does
        not answer yet (GDB gives up on a packet after 2 s)."""
        deadline = time.monotonic() + timeout
        while True:
            check_stop()
            if self.poll() is not None:
                raise GdbfaultError(f"QEMU died at launch ({describe_exit(self.poll())}): "
                                    f"{self.stderr_tail() or 'no message'}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
                try:
                    probe.connect(str(self.probe_qmp_socket))
                    if probe.recv(1):        # the QMP greeting: the main loop runs
                        return self
                except (ConnectionRefusedError, FileNotFoundError, socket.timeout):
                    pass
            if time.monotonic() >= deadline:
                raise GdbfaultError(f"QEMU did not finish starting within {timeout:.0f} s")
            time.sleep(0.02)

    # -- while running -----------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def poll(self):
        """QEMU's exit status, or None while it runs."""
        return self.proc.poll() if self.proc else None

    def wait(self, timeout):
        """Wait for QEMU to exit; its status, or None on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_until(self, deadline):
        """Wait for QEMU to exit until time.monotonic() reaches `deadline`
        (None when it did not); a stop signal raises `Stopped`."""
        while True:
            check_stop()
            left = deadline - time.monotonic()
            if left <= 0:
                return self.poll()
            status = self.wait(min(left, 0.2))
            if status is not None:
                return status

    def stop(self, grace=5.0):
        """Ask a running QEMU to quit in order (SIGTERM: plugins write their
        results at exit), kill it if it does not; its exit status."""
        return self._end("stopped_by_us", grace)

    def end_after_result(self, grace=5.0):
        """End a guest whose result is out (its power-off is not measured):
        SIGTERM, which QEMU takes as a host shutdown request — a recording
        logs it, and its replay shuts down at the same instruction. The
        exit status (0 when QEMU quit in order)."""
        return self._end("ended_after_result", grace)

    def _end(self, why, grace):
        """SIGTERM, then SIGKILL after `grace` s, to a QEMU still running, noting
        `why` (an attribute) was the reason; the exit status."""
        if self.proc is not None and self.proc.poll() is None:
            setattr(self, why, True)
            kill_tree(self.proc.pid, grace=grace)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        return self.poll()

    def replay_icount(self):
        """The guest's instruction count (QMP query-replay) on the watch socket
        (MachineConfig.watch_qmp), over one connection kept until close().
        Raises OSError, EOFError or qemu.qmp.QMPError when QMP is gone."""
        if self._watch is None:
            from qemu.qmp.legacy import QEMUMonitorProtocol
            client = QEMUMonitorProtocol(str(self.watch_qmp_socket))
            client.connect()
            self._watch = client
        return int(self._watch.cmd("query-replay")["icount"])

    def serial_output(self):
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self):
        try:
            lines = self.stderr_log.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return lines[-1] if lines else ""

    def check_exit(self, status):
        """Raise GuestError for an exit status that is not a clean power-off."""
        if status == EXIT_CLEAN:
            return
        detail = self.stderr_tail()
        if status is not None and status in (EXIT_OOPS, EXIT_PANIC):
            oops = next((l.strip() for l in self.serial_output().splitlines()
                         if l.startswith(("Oops", "Kernel panic"))), "")
            detail = oops or detail
        raise GuestError(describe_exit(status) + (f": {detail}" if detail else ""))

    def check_recording_exit(self, status):
        """check_exit for an rr=record run: one that died or whose guest failed
        has nothing to replay, and the error says so."""
        if status == EXIT_CLEAN:
            return
        try:
            self.check_exit(status)
        except GuestError as exc:
            raise GuestError(f"the recording run failed, no replay attempted: {exc}") from None

    # -- teardown ----------------------------------------------------------
    def close(self, keep_dir=False):
        """Stop QEMU (if running) and remove the run directory; no signal cuts it short."""
        with shielded():
            if self._watch is not None:
                try:
                    self._watch.close()
                except Exception:        # QEMU already gone: nothing to close cleanly
                    pass
                self._watch = None
            self.stop()
            if self._own_dir and not keep_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def kill_tree(pid, grace=3.0):
    """Terminate a process and its children; kill what does not go."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = root.children(recursive=True) + [root]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
