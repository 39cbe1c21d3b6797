"""Attaching to a QEMU that is already running: `gdbfault attach --port/--socket/--pid`.

gdbfault did not start this QEMU, so it finds the gdbstub (from the process's
command line with --pid), counts for a while with the same in-GDB probes, and
then removes them and detaches, leaving the guest running as it was.
"""
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psutil

from gdbfault.errors import GdbfaultError, GuestError
from gdbfault.gdb import Debugger, GdbCommandError
from gdbfault.profiles import load_profile, pick_profile, resolve_probes
from gdbfault.run import (RunFailed, RunSpec, _connect, _fill, _load_probe_engine, _new_result,
                          _prepare_debugger, _salvage, _Session, read_counts)
from gdbfault.symbols import load_symbols

__all__ = ["attach_running", "gdbstub_of_pid"]


def _detach(dbg, timeout=10.0, unpatch=False):
    """Stop the guest, remove our breakpoints, detach: it runs on untouched.

    unpatch: first put back the bytes a live patch's jmps overwrote (the
    replacement code stays in the live-patch area, so a CPU still running
    it returns normally)."""
    dbg.mi("-exec-interrupt")
    dbg.wait_event(lambda r: r.get("message") == "stopped"
                   and (r.get("payload") or {}).get("signal-name") == "SIGINT", timeout / 4)
    deadline = time.monotonic() + timeout
    next_interrupt = time.monotonic() + 1.0
    while True:
        try:
            if unpatch:
                dbg.console("faultprobe unpatch")
            dbg.console("faultprobe clear")
            break
        except GdbCommandError as exc:
            # The interrupt can land while GDB steps over a probe; it settles,
            # or (seen under load) is lost: then interrupt again.
            if "while the target is running" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            if time.monotonic() > next_interrupt:
                next_interrupt = time.monotonic() + 1.0
                _interrupt_again(dbg)
    dbg.mi("-target-detach")


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


def _check_reachable(address):
    """Fail early, in one line, when nothing listens at a gdbstub address."""
    if ":" in address and not address.startswith("/"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except (OSError, ValueError):
            raise GdbfaultError(f"nothing is listening on {address} (no gdbstub there)")
    elif not Path(address).exists():
        raise GdbfaultError(f"no gdbstub socket at {address}")


def attach_running(address, kernel, system_map=None, profile=None, extra_probes=(),
                   duration=None, gdb="gdb", live_patch=None, keep_patch=False, lab_variant=None):
    """Count on a QEMU that is already running, then detach and leave it running.

    address: 'host:port' or a unix socket path. Counts until `duration`
    seconds have passed or Ctrl-C; returns a RunResult dict. live_patch: a
    file for --live-patch, applied at once (livepatch_run.apply_now) and
    taken out again before detaching unless keep_patch.
    """
    kernel = Path(kernel)
    symbols = load_symbols(kernel, system_map)
    prof = load_profile(profile) if profile else pick_profile(symbols)
    probes = resolve_probes(prof, symbols, extra_probes)
    patch = None
    if live_patch:                       # built (or refused) before we touch the guest
        from gdbfault.livepatch import prepare_live_patch
        patch = prepare_live_patch(live_patch, kernel, system_map, lab_variant)
    _check_reachable(address)
    spec = RunSpec(kernel=str(kernel), system_map=system_map, workload=None, gdb=gdb, trace=False)
    result = _new_result(spec, kernel, symbols, prof, probes, None)
    result["tool"]["qemu"] = "unknown (attached)"
    result["workload"]["attached_to"] = address
    result["mode"].update({"accel": "unknown", "icount": False, "replay": False})
    work = Path(tempfile.mkdtemp(prefix="gdbfault-attach-"))
    session = _Session()
    t_start = None
    try:
        session.debugger = dbg = Debugger(gdb)
        _prepare_debugger(dbg, kernel)
        _connect(dbg, address)
        _load_probe_engine(dbg, probes, None)
        t_start = time.monotonic()
        if patch is not None:
            from gdbfault.livepatch_run import apply_now
            apply_now(dbg, patch, work)
        dbg.mi("-exec-continue")
        deadline = t_start + duration if duration else None
        interrupted = False
        try:
            while deadline is None or time.monotonic() < deadline:
                if dbg.wait_event(lambda r: r.get("message") in ("thread-group-exited",), 0.5):
                    raise GuestError("the QEMU we attached to went away")
                if not dbg.alive:
                    raise GdbfaultError(f"GDB died; last message: {dbg.last_log() or 'none'}")
        except KeyboardInterrupt:
            interrupted = True
        session.snapshot = read_counts(dbg, work)
        _detach(dbg, unpatch=patch is not None and not keep_patch)
        if patch is not None:            # the patch's record now says whether it was taken out
            session.snapshot["patch"] = read_counts(dbg, work).get("patch")
        _fill(result, session, t_start, spec)
        if patch is not None:
            from gdbfault.livepatch_run import fill_live_patch
            lp = fill_live_patch(result, session.snapshot, patch, None, None)
            lp["kept"] = bool(keep_patch)
        result["run"]["complete"] = True
        result["run"]["exit"] = "interrupted; detached, guest left running" if interrupted \
            else "detached, guest left running"
        return result
    except GdbfaultError as exc:
        _salvage(result, session, t_start, spec)
        if patch is not None and not keep_patch and session.debugger is not None \
                and session.debugger.alive:
            try:                         # never leave the user's kernel patched
                _detach(session.debugger, unpatch=True)
            except GdbfaultError:
                pass
        result["run"]["error"] = str(exc)
        raise RunFailed(exc, result) from None
    finally:
        if session.debugger is not None:
            session.debugger.close()
        shutil.rmtree(work, ignore_errors=True)
