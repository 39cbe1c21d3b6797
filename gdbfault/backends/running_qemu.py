"""Attaching to a QEMU that is already running: `gdbfault attach --port/--socket/--pid`.

gdbfault did not start this QEMU, so it finds the gdbstub (from the process's
command line with --pid) and a QMP socket if it has one, checks that the
guest runs the kernel it was told (kernels/identity.py: the banner, and the
code at every probe address against the kernel file) before it arms a
probe, counts with the same in-GDB probes — reading a snapshot of the
counts about once a second, so a part that dies leaves the counts up to the
last one — and then removes them and detaches, leaving the guest as it was.

Whatever ends the count — its end, a signal, an error, GDB or QEMU dying —
the guest is left as it was found: through our GDB when it is there, else
through a new gdbstub connection that writes back the bytes recorded
before anything was changed (machine/rescue.py), and, should gdbfault
itself be SIGKILLed, by its guardian (machine/guardian.py). What could not
be put back is said in one line, with how to undo it.
"""
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from gdbfault.base.errors import GdbfaultError, GuestError, RunFailed
from gdbfault.base.lifecycle import Stopped, shielded
from gdbfault.backends.plan import new_result
from gdbfault.kernels.banner import read_guest_bytes
from gdbfault.kernels.identity import check_running_kernel, image_code
from gdbfault.machine.gdbmi import Debugger, GdbCommandError
from gdbfault.machine.guardian import forget_guest, watch_guest
from gdbfault.machine.qemu import qemu_version
from gdbfault.machine.rescue import GdbStub, GuestRestore, StubError, restore_guest, settle
from gdbfault.model.result import Mode, Workload
from gdbfault.probing.gdb_session import connect, load_probe_engine, measured, prepare_debugger, read_counts
from gdbfault.probing.measure import fill_result

__all__ = ["count_on_running", "attached_result", "gdbstub_of_pid", "qmp_of_process", "check_reachable",
           "qemu_process", "describe_qemu", "SNAPSHOT_EVERY_S"]

SNAPSHOT_EVERY_S = 1.0
DETACH_TIMEOUT_S = 10.0
# How long a new gdbstub connection is tried for when our GDB is gone: QEMU takes it only once it has
# seen the old one close (a killed GDB's, at once; a loaded machine can make it seconds).
RESCUE_S = 20.0


def _detach(dbg, hooks, failed=False, armed=True, timeout=DETACH_TIMEOUT_S):
    """Stop the guest, let a feature undo what it did (hooks.before_detach: a live patch
    puts back the bytes it overwrote), remove our breakpoints, detach: it runs on untouched."""
    try:
        dbg.mi("-exec-interrupt", timeout=timeout)
    except GdbCommandError:          # stopped already
        pass
    # Any stop will do: an interrupt that lands while GDB steps over a probe
    # is not always reported as SIGINT, and waiting for one cost 10 s.
    dbg.wait_event(lambda r: r.get("message") == "stopped", min(timeout, 2.0))
    deadline = time.monotonic() + timeout
    if armed:                        # (a count refused before its probes has none to clear)
        _once_stopped(dbg, lambda: hooks.before_detach(dbg, failed=failed), deadline)
        _once_stopped(dbg, lambda: dbg.console("faultprobe clear", timeout=timeout), deadline)
    dbg.mi("-target-detach", timeout=timeout)


def _once_stopped(dbg, step, deadline):
    """Do `step` (GDB commands) once the guest is really stopped. The interrupt can land while
    GDB steps over a probe; it settles, or (seen under load) is lost: then interrupt again."""
    next_interrupt = time.monotonic() + 1.0
    while True:
        try:
            return step()
        except GdbCommandError as exc:
            if "while the target is running" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            if time.monotonic() > next_interrupt:
                next_interrupt = time.monotonic() + 1.0
                _interrupt_again(dbg)


def _interrupt_again(dbg):
    try:
        dbg.mi("-exec-interrupt")
    except GdbCommandError:          # it stopped meanwhile
        pass


def gdbstub_of_pid(pid):
    """The gdbstub address of a running QEMU, read from its command line."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        raise GdbfaultError(f"no process with pid {pid}")
    except psutil.AccessDenied:
        raise GdbfaultError(f"cannot read the command line of pid {pid} (permission denied)")
    if not cmdline or "qemu-system" not in Path(cmdline[0]).name:
        raise GdbfaultError(f"pid {pid} is not a QEMU system emulator ({cmdline[:1]})")
    for i, word in enumerate(cmdline):
        if word == "-s":             # (their QEMU listens on every interface; we only read it)
            return "localhost:1234"
        if word == "-gdb" and i + 1 < len(cmdline):
            dev = cmdline[i + 1].split(",")[0]
            if dev.startswith("unix:"):
                return _in_cwd_of(pid, dev[len("unix:"):])
            if dev.startswith("tcp:"):
                host, _, port = dev[len("tcp:"):].rpartition(":")
                return f"{host or 'localhost'}:{port}"
            raise GdbfaultError(f"QEMU pid {pid} has a gdbstub on '{dev}', which gdbfault cannot reach")
    raise GdbfaultError(f"QEMU pid {pid} has no gdbstub", "start it with -gdb unix:PATH,server=on,wait=off "
                        "or -gdb tcp:127.0.0.1:PORT")


def check_reachable(address, timeout=3.0, resume=True):
    """Fail early, in one line, when nothing at a gdbstub address speaks GDB's
    remote protocol (GDB itself would wait ~30 s on a silent listener).

    A connection stops a QEMU guest; `resume` detaches again, which lets it run
    on (leave it False for a guest that was found paused)."""
    if not (":" in address and not address.startswith("/")) and not Path(address).exists():
        raise GdbfaultError(f"no gdbstub socket at {address}")
    try:                                  # (one connection: each one stops a QEMU guest)
        stub = GdbStub(address, timeout=timeout)
    except (OSError, ValueError) as exc:
        raise GdbfaultError(f"nothing is listening on {address} "
                            f"({getattr(exc, 'strerror', None) or exc or 'no gdbstub there'})") from None
    with stub:
        try:
            stub.stop_reason()            # "why did you stop?": every gdbstub answers it
        except (OSError, StubError):
            raise GdbfaultError(f"{address} does not answer GDB's remote protocol within {timeout:.0f} s "
                                "(not a gdbstub, or another debugger is attached)") from None
        if resume:
            try:
                stub.detach()
            except (OSError, StubError):
                pass


def qemu_process(address, pid=None):
    """The running QEMU behind a gdbstub address (psutil.Process), or None."""
    if pid is not None:
        try:
            return psutil.Process(pid)
        except psutil.Error:
            return None
    port = address.rpartition(":")[2] if ":" in address and not address.startswith("/") else None
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            name, cmdline = proc.info["name"] or "", proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if not name.startswith("qemu-system"):
            continue
        for i, word in enumerate(cmdline):
            nxt = cmdline[i + 1] if i + 1 < len(cmdline) else ""
            if port is None and word == "-gdb" and nxt.split(",")[0] == f"unix:{address}":
                return proc
            if port is not None and ((word == "-s" and port == "1234") or (
                    word == "-gdb" and nxt.split(",")[0].startswith("tcp:")
                    and nxt.split(",")[0].rpartition(":")[2] == port)):
                return proc
    return None


def describe_qemu(proc):
    """{qemu version, accel, icount, binary (its path), cpu (its -cpu model, else None)} of a
    running QEMU, from its binary and command line."""
    out = {"qemu": "unknown (attached)", "accel": "unknown", "icount": False, "binary": None, "cpu": None}
    if proc is None:
        return out
    try:
        exe, cmdline = proc.exe(), proc.cmdline()
    except psutil.Error:
        return out
    out["binary"] = exe
    try:
        out["qemu"] = qemu_version(exe)
    except GdbfaultError:
        pass
    words = " ".join(cmdline)
    out["accel"] = "kvm" if ("-enable-kvm" in cmdline or "accel=kvm" in words) else "tcg"
    out["icount"] = "-icount" in cmdline
    if "-cpu" in cmdline[:-1]:
        out["cpu"] = cmdline[cmdline.index("-cpu") + 1].split(",")[0]
    return out


def attached_result(plan, address, facts):
    """The RunResult skeleton of a count on a running QEMU (facts: describe_qemu's)."""
    result = new_result(plan)
    result.tool.qemu = facts["qemu"]
    result.kernel.lab, result.kernel.variant = False, None
    result.kernel.model = plan.profile.name
    result.workload = Workload(name=None, own=False, iterations=None, command_line="", attached_to=address)
    result.mode = Mode(backend="gdb", accel=facts["accel"], icount=facts["icount"], trace=False, cost_sample=1,
                       replay=False)
    result.mode.cpu = facts["cpu"]
    result.tool.emulator = Path(facts["binary"] or plan.arch.qemu).name
    result.kernel.arch = plan.arch.kernel
    return result


def _in_cwd_of(pid, path):
    """A socket path from a QEMU's command line, made absolute against that QEMU's working folder."""
    if os.path.isabs(path):
        return path
    try:
        return str(Path(psutil.Process(pid).cwd()) / path)
    except psutil.Error:
        return path


def qmp_of_process(proc):
    """A QMP unix socket of a running QEMU (psutil.Process), from its command line, or None:
    `-qmp unix:PATH,...`, or a `-chardev socket,id=ID,path=PATH,server=on` that a
    `-mon chardev=ID,mode=control` serves."""
    if proc is None:
        return None
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    chardevs, monitors = {}, []
    for i, word in enumerate(cmdline[:-1]):
        value = cmdline[i + 1]
        opts = dict(kv.partition("=")[::2] for kv in value.split(",")[1:])
        if word in ("-qmp", "-qmp-pretty") and value.startswith("unix:"):
            return _in_cwd_of(proc.pid, value.split(",")[0][len("unix:"):])
        if word == "-chardev" and value.startswith("socket") and "path" in opts and opts.get("server") in ("on", ""):
            chardevs[opts.get("id")] = opts["path"]
        if word == "-mon":
            mon = dict(kv.partition("=")[::2] for kv in value.split(","))
            if mon.get("mode") == "control":
                monitors.append(mon.get("chardev"))
    for name in monitors:
        if name in chardevs:
            return _in_cwd_of(proc.pid, chardevs[name])
    return None


@dataclass
class _Window:
    """The counting window on a running QEMU: its GDB, the last snapshot of the counts and when."""

    work: Path
    dbg: object = None
    connected: bool = False
    armed: bool = False            # the probe engine is loaded (and a feature may have acted)
    t_start: float = None
    snapshot: dict = None
    snapshot_at: float = None      # time.monotonic() of the snapshot

    def read(self):
        self.snapshot = read_counts(self.dbg, self.work)
        self.snapshot_at = time.monotonic()
        return self.snapshot


def count_on_running(plan, address, hooks, duration=None, qmp=None, qemu=None, found="running"):
    """Count on a QEMU that is already running, then leave its guest as it was found.

    Counts until `duration` seconds have passed or Ctrl-C (then exit 0: that is
    how the user ends the count); SIGTERM/SIGHUP save the counts and raise
    RunFailed with the signal's exit code. `qmp`: a QMP socket of that QEMU,
    `qemu`: its psutil.Process, when known; `found`: its QMP status before
    gdbfault touched it (a paused guest is left paused). Returns the plan's RunResult.
    """
    result = plan.result
    window = _Window(plan.temp_dir("gdbfault-attach-"))
    restore = GuestRestore(address, qmp=qmp, was_running=found in (None, "running"))
    key = f"{os.getpid()}:{address}"
    interrupted = failure = None
    try:
        try:
            interrupted = _count(plan, address, hooks, duration, window, restore, key)
        except (GdbfaultError, KeyboardInterrupt) as exc:
            failure = exc
        with shielded():
            state, guest = _leave(window, hooks, restore, failure is not None, qemu)
            if state is not False:
                forget_guest(key)
            _fill(result, window)
            result.run.guest = guest
            try:
                hooks.finish(result, window.snapshot)
            except Exception as exc:     # (a live patch's record, after a failure: best effort)
                if failure is None:
                    failure = exc if isinstance(exc, GdbfaultError) else GdbfaultError(str(exc))
    finally:
        if window.dbg is not None:
            window.dbg.close()
        hooks.close()
    if failure is not None:
        raise _failed(result, failure, window, guest, qemu_gone=_qemu_gone(qemu))
    result.run.complete = True
    result.run.exit = "interrupted; detached, guest left running" if interrupted else "detached, guest left running"
    if isinstance(interrupted, Stopped) and interrupted.signum != signal.SIGINT:
        stop = GdbfaultError(str(interrupted))
        stop.exit_code = interrupted.exit_code
        result.run.error = str(stop)
        result.run.exit = f"{interrupted}; detached, guest left running"
        raise RunFailed(stop, result)
    return result


def _count(plan, address, hooks, duration, window, restore, key):
    """Connect, check the kernel, arm the probes and count; the KeyboardInterrupt that ended the
    window (None when --duration did)."""
    window.dbg = dbg = Debugger(plan.spec.gdb)
    prepare_debugger(dbg, plan.kernel, plan.arch)
    watch_guest(key, restore)           # from the connection on, the guardian can detach it
    window.connected = True             # (from the attempt on: a half-made connection stops the guest too)
    connect(dbg, address)
    identity = _check_kernel(dbg, plan)
    kernel = plan.result.kernel
    kernel.banner, kernel.banner_form = identity.pop("banner"), identity.pop("form")
    kernel.identity = dict(kernel.identity or {}, running=identity)
    window.armed = True
    load_probe_engine(dbg, plan.probes, None, arch=plan.arch)
    window.t_start = time.monotonic()
    hooks.on_debugger(dbg, _Attached(window.work, restore, key), recording=False)
    dbg.mi("-exec-continue")
    deadline = window.t_start + duration if duration else None
    next_snapshot = time.monotonic() + SNAPSHOT_EVERY_S
    try:
        while deadline is None or time.monotonic() < deadline:
            if dbg.wait_event(lambda r: r.get("message") in ("thread-group-exited",), 0.2):
                raise GuestError("the QEMU we attached to went away")
            if not dbg.alive:
                raise GdbfaultError(f"GDB died; last message: {dbg.last_log() or 'none'}")
            if time.monotonic() >= next_snapshot:
                next_snapshot = time.monotonic() + SNAPSHOT_EVERY_S
                try:
                    window.read()
                except GdbfaultError:
                    if not dbg.alive:
                        raise GdbfaultError(f"GDB died; last message: {dbg.last_log() or 'none'}") from None
                    raise
    except KeyboardInterrupt as exc:
        try:
            window.read()                 # the window ends here, not after the detach
        except GdbfaultError:             # (GDB went too: the last snapshot stands)
            pass
        return exc
    window.read()
    return None


def _check_kernel(dbg, plan):
    """Is the guest running the kernel we were told (kernels/identity.py)? Raises before any probe is set."""
    def read(address, size):
        try:
            return read_guest_bytes(dbg, address, size)
        except GdbfaultError:
            return b""
    label = f"lab kernel ({plan.spec.variant})" if plan.lab else plan.kernel.name
    return check_running_kernel(read, plan.symbols, plan.probes, plan.kernel, label, plan.image,
                                image_code(plan.kernel, plan.symbols))


def _qemu_gone(qemu):
    if qemu is None:
        return False
    try:
        return not qemu.is_running() or qemu.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _leave(window, hooks, restore, failed, qemu):
    """Leave the guest as it was found; (state, one line): state True when done through our GDB or
    a new gdbstub connection, None when there was nothing to do, False when it could not be done."""
    dbg = window.dbg
    if not window.connected and (dbg is None or not dbg.alive):
        return None, None                 # never connected: the guest was not touched
    if _qemu_gone(qemu):
        return None, "the QEMU we attached to is gone: nothing to put back"
    why = None
    if dbg is not None and dbg.alive:
        try:
            _detach(dbg, hooks, failed=failed, armed=window.armed)
            status = settle(restore)
            return True, "detached, guest left as found" + (f" (QMP says '{status}')" if status else "")
        except GdbfaultError as exc:
            why = exc
        dbg.close()                        # its connection must close before a new one is taken
    ok, text = restore_guest(restore, attempts_s=RESCUE_S)
    hooks.guest_restored(bool(ok))
    if why is not None and ok is not False:
        text = f"GDB could not detach ({why}); {text}"
    return ok, text


def _failed(result, failure, window, guest, qemu_gone=False):
    """The RunFailed of a window that ended badly: its error names what was kept and what became of the guest.
    When the QEMU is gone, that is the cause (exit 3), whatever GDB said about it."""
    if isinstance(failure, KeyboardInterrupt):
        stopped = failure if isinstance(failure, Stopped) else Stopped()
        failure = GdbfaultError(str(stopped))
        failure.exit_code = stopped.exit_code
    elif qemu_gone and not isinstance(failure, GuestError):
        failure = GuestError(f"the QEMU we attached to went away (GDB then said: {failure})")
    if window.t_start is not None:
        kept = (f"counts up to {window.snapshot_at - window.t_start:.1f} s into the window kept"
                if window.snapshot is not None else "no counts were read before it ended")
    else:
        kept = None
    message = "; ".join(part for part in (str(failure), kept, guest) if part)
    error = GdbfaultError(message)
    error.exit_code = getattr(failure, "exit_code", 2)
    result.run.error = message
    result.run.exit = str(failure)
    return RunFailed(error, result)


class _Attached:
    """What a feature's on_debugger() is given for a QEMU gdbfault did not start: a folder for its files,
    and `remember()`, which records bytes about to be overwritten (before they are) so the guest can be
    put back without GDB."""

    def __init__(self, run_dir, restore, key):
        self.run_dir = run_dir
        self.restore = restore
        self.key = key

    def remember(self, old, functions):
        """`old`: [(address, bytes now there)] in the order they go back; `functions`: [(name, entry)]."""
        self.restore.writes = list(old)
        self.restore.functions = list(functions)
        watch_guest(self.key, self.restore)


def _fill(result, window):
    """The counts of the window into the result (there is no guest output to read): the last snapshot,
    and the window as long as it covers."""
    end = window.snapshot_at or time.monotonic()     # (the last read is at the window's end)
    wall = end - window.t_start if window.t_start else None
    fill_result(result, measured(window.snapshot, serial=None, wall_s=wall))
    if window.t_start is not None:
        result.run.counts_at_s = (round(window.snapshot_at - window.t_start, 3)
                                  if window.snapshot_at is not None else None)
