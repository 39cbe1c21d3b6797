"""Attaching to a QEMU that is already running: `gdbfault attach --port/--socket/--pid`.

gdbfault did not start this QEMU, so it finds the gdbstub (from the process's
command line with --pid), counts for a while with the same in-GDB probes, and
then removes them and detaches, leaving the guest running as it was.
"""
import signal
import socket
import time
from pathlib import Path

import psutil

from gdbfault.base.errors import GdbfaultError, GuestError, RunFailed
from gdbfault.backends.plan import new_result
from gdbfault.kernels.banner import BANNER_SYMBOL, read_banner
from gdbfault.machine.gdbmi import Debugger, GdbCommandError
from gdbfault.machine.qemu import qemu_version
from gdbfault.model.result import Mode, Workload
from gdbfault.probing.gdb_session import connect, load_probe_engine, measured, prepare_debugger, read_counts
from gdbfault.probing.measure import fill_result

__all__ = ["count_on_running", "attached_result", "gdbstub_of_pid", "check_reachable", "qemu_process",
           "describe_qemu"]


def _detach(dbg, hooks, timeout=10.0):
    """Stop the guest, let a feature undo what it did (hooks.before_detach: a live patch
    puts back the bytes its jmps overwrote), remove our breakpoints, detach: it runs on untouched."""
    dbg.mi("-exec-interrupt")
    # Any stop will do: an interrupt that lands while GDB steps over a probe
    # is not always reported as SIGINT, and waiting for one cost 10 s.
    dbg.wait_event(lambda r: r.get("message") == "stopped", min(timeout, 2.0))
    deadline = time.monotonic() + timeout
    _once_stopped(dbg, lambda: hooks.before_detach(dbg), deadline)
    _once_stopped(dbg, lambda: dbg.console("faultprobe clear"), deadline)
    dbg.mi("-target-detach")


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
                return dev[len("unix:"):]
            if dev.startswith("tcp:"):
                host, _, port = dev[len("tcp:"):].rpartition(":")
                return f"{host or 'localhost'}:{port}"
            raise GdbfaultError(f"QEMU pid {pid} has a gdbstub on '{dev}', which gdbfault cannot reach")
    raise GdbfaultError(f"QEMU pid {pid} has no gdbstub", "start it with -gdb unix:PATH,server=on,wait=off "
                        "or -gdb tcp:127.0.0.1:PORT")


def check_reachable(address, timeout=3.0):
    """Fail early, in one line, when nothing at a gdbstub address speaks GDB's
    remote protocol (GDB itself would wait ~30 s on a silent listener)."""
    if ":" in address and not address.startswith("/"):
        host, _, port = address.rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=2)
        except (OSError, ValueError):
            raise GdbfaultError(f"nothing is listening on {address} (no gdbstub there)") from None
    else:
        if not Path(address).exists():
            raise GdbfaultError(f"no gdbstub socket at {address}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            raise GdbfaultError(f"nothing is listening on {address} ({exc.strerror or exc})") from None
    with sock:
        try:
            sock.settimeout(timeout)
            sock.sendall(b"$?#3f")        # "why did you stop?": every gdbstub answers it
            reply = sock.recv(1)
        except OSError:
            reply = b""
    if reply not in (b"+", b"$"):
        raise GdbfaultError(f"{address} does not answer GDB's remote protocol within {timeout:.0f} s "
                            "(not a gdbstub, or another debugger is attached)")


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


def count_on_running(plan, address, hooks, duration=None):
    """Count on a QEMU that is already running, then detach and leave it running.

    Counts until `duration` seconds have passed or Ctrl-C (then exit 0: that is
    how the user ends the count); SIGTERM/SIGHUP save the counts and raise
    RunFailed with the signal's exit code. Returns the plan's RunResult.
    """
    from gdbfault.base.lifecycle import Stopped
    result = plan.result
    work = plan.temp_dir("gdbfault-attach-")
    dbg = snapshot = t_start = None
    detached = False
    try:
        dbg = Debugger(plan.spec.gdb)
        prepare_debugger(dbg, plan.kernel, plan.arch)
        connect(dbg, address)
        try:
            _check_banner(dbg, plan)
        except GdbfaultError:
            detached = True             # (it detached before saying so)
            raise
        load_probe_engine(dbg, plan.probes, None, arch=plan.arch)
        t_start = time.monotonic()
        hooks.on_debugger(dbg, _Attached(work), recording=False)
        dbg.mi("-exec-continue")
        deadline = t_start + duration if duration else None
        interrupted = False
        try:
            while deadline is None or time.monotonic() < deadline:
                if dbg.wait_event(lambda r: r.get("message") in ("thread-group-exited",), 0.5):
                    raise GuestError("the QEMU we attached to went away")
                if not dbg.alive:
                    raise GdbfaultError(f"GDB died; last message: {dbg.last_log() or 'none'}")
        except KeyboardInterrupt as exc:
            interrupted = exc
        snapshot = read_counts(dbg, work)
        _fill(result, snapshot, t_start)  # the window ends here, not after the detach
        _detach(dbg, hooks)
        detached = True
        hooks.finish(result, snapshot)
        result.run.complete = True
        result.run.exit = "interrupted; detached, guest left running" if interrupted \
            else "detached, guest left running"
        if isinstance(interrupted, Stopped) and interrupted.signum != signal.SIGINT:
            stop = GdbfaultError(str(interrupted))
            stop.exit_code = interrupted.exit_code
            result.run.error = str(stop)
            result.run.exit = f"{interrupted}; detached, guest left running"
            raise RunFailed(stop, result)
        return result
    except RunFailed:
        raise
    except (GdbfaultError, KeyboardInterrupt) as exc:
        try:                             # the counts of the last snapshot, if one was read
            _fill(result, snapshot, t_start)
        except Exception:
            pass
        if not detached and dbg is not None and dbg.alive:
            try:                         # never leave the user's kernel patched
                _detach(dbg, hooks)
            except GdbfaultError:
                pass
        if isinstance(exc, KeyboardInterrupt):
            stopped = exc if isinstance(exc, Stopped) else Stopped()
            exc = GdbfaultError(str(stopped))
            exc.exit_code = stopped.exit_code
        result.run.error = str(exc)
        raise RunFailed(exc, result) from None
    finally:
        if dbg is not None:
            dbg.close()
        hooks.close()


def _check_banner(dbg, plan):
    """Is the map the running kernel's? `linux_banner` read now (the guest is stopped), as a
    booted run reads it at the workload's entry. On a mismatch GDB detaches first, leaving the
    guest as it was, then the one-line error is raised. Nothing to compare for an ELF kernel
    such as the lab kernel (its file has no version string). A guest stopped in user mode under
    page-table isolation may not map the banner: then it is not checked; stopped in the kernel,
    which maps all of itself, an unreadable banner means another kernel."""
    if plan.image is None or not plan.image.version:      # (an ELF has no version string to compare)
        return
    try:
        banner = read_banner(dbg, plan.symbols, plan.image, unreadable_ok=True)
        address = plan.symbols.address(BANNER_SYMBOL)
        if banner is None and address is not None and _cpl(dbg) == 0:
            raise GdbfaultError(f"System.map does not match the running kernel: {BANNER_SYMBOL} "
                                f"({address:#x}) is not mapped in its memory",
                                f"give the System.map of the kernel this QEMU runs ({plan.symbols.source})")
    except GdbfaultError:
        dbg.mi("-target-detach")
        raise


def _cpl(dbg):
    """The stopped CPU's privilege level (its code segment selector's low bits)."""
    rec, _ = dbg.mi("-data-evaluate-expression $cs")
    return int((rec.get("payload") or {}).get("value", "0"), 0) & 3


class _Attached:
    """What a feature's on_debugger() is given for a QEMU gdbfault did not start: a folder for its files."""

    def __init__(self, run_dir):
        self.run_dir = run_dir


def _fill(result, snapshot, t_start):
    """The counts of the attach window into the result (there is no guest output to read)."""
    wall = time.monotonic() - t_start if t_start else None
    fill_result(result, measured(snapshot, serial=None, wall_s=wall))
