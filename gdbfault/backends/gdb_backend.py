"""The GDB backend: one run recorded, then counted in its replay under GDB.

`run_with_gdb(plan, hooks)` measures a resolved run (backends/plan.py):
- it records the guest with no debugger attached (`-icount rr=record`,
  backends/recording.py), then replays it under GDB, where
  gdbscripts/faultprobe.py counts and traces every probe hit; a replay
  re-injects every interrupt at its recorded instruction count, so
  breakpoints cannot change what the guest does;
- an old kernel's recording stops once at the workload's entry (banner
  check, VM snapshot) and its replay starts there; both end at the
  workload's result line;
- without icount or with --live it counts live, in one run.
Counts are snapshotted about once a second, so whatever ends the run early
leaves its counts in the result. A feature (RunHooks) gets the counting
GDB before the guest runs, and the recording's too when it writes guest memory;
the TCG plugins it asks for (RunHooks.plugins) go into the recording, which
runs unobserved (into the live run when there is no recording).

Record once, count many (kept.py): a run of a guest recorded before (kept
beside --output, or in the recordings cache) replays that recording instead
of booting. The counting replay saves keyframes along the workload and writes
the fault index; a complete run's recording is then cached and kept.
"""
import threading
import time

from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.base.lifecycle import check_stop, shielded
from gdbfault.backends.kept import KEYFRAME_INTERVAL, KEYFRAMES_AT_MOST, find_recording, keep_recording
from gdbfault.backends.recording import (ENTRY_SNAPSHOT, RESULT_LINE, RESULT_POLL_S, EntrySnapshot,
                                         HookedDebugger, record, starts_at_entry, timed_out)
from gdbfault.kernels.banner import check_banner, read_banner
from gdbfault.machine.config import plugin_config, replay_config
from gdbfault.machine.gdbmi import Debugger, mi_quote
from gdbfault.machine.qemu import ENDED_AFTER_RESULT, EXIT_CLEAN, Machine, describe_exit
from gdbfault.model.truth import parse_guest_output
from gdbfault.probing.gdb_session import (REPLAY_ICOUNT, connect, load_probe_engine, measured, prepare_debugger,
                                          read_counts, start_tracer)
from gdbfault.probing.measure import fill_result, open_path_label

__all__ = ["run_with_gdb"]

SNAPSHOT_EVERY_S = 1.0
# A replay started from a snapshot must execute its first instruction within this
# (one that can runs it within milliseconds; one that stands still costs this
# much before the power-on replay, in about one old-kernel run in 20-30).
SNAPSHOT_START_S = 2.0


class _Session:
    """The live parts of the counting run, torn down in one place."""

    def __init__(self):
        self.machine = None
        self.debugger = None
        self.ready = None             # the replay's GDB, made ready while the guest is recorded
        self.snapshot = None          # last counts read from GDB
        self.index = None             # the fault index the tracer wrote (faultprobe index)

    def close(self, keep_dir=False):
        if self.debugger is not None:
            self.debugger.close()
        if self.machine is not None:
            self.machine.close(keep_dir=keep_dir)
        if self.ready is not None:
            self.ready.join(5.0)      # GDB is gone: its commands fail at once


class _SnapshotStalled(Exception):
    """A replay from the entry snapshot did not start: replay the recording from power-on."""


def run_with_gdb(plan, hooks):
    """Measure the resolved run under GDB (see the module docstring); return the filled RunResult."""
    spec, result = plan.spec, plan.result
    replay = spec.replay and spec.icount
    result.mode.replay = replay
    session = _Session()
    t_start = None
    try:
        recording, from_entry = _record(plan, hooks, session) if replay else (None, False)
        while True:                      # twice at most: a snapshot replay that does not start
            try:
                t_start = _start_counting(plan, hooks, session, recording, from_entry)
                break
            except _SnapshotStalled:
                with shielded():
                    session.close()
                session, from_entry = _Session(), False
        # An old kernel's replay ends at the result line too, also when its
        # recording powered off before gdbfault could end it (the power-off
        # path would only cost time: it is not measured).
        status = _supervise(plan, hooks, session, end_at_result=replay and (
            from_entry or (recording is not None and recording.ended_after_result)))
        result = _finish(plan, hooks, session, status, recording, t_start)
        if recording is not None:
            keep_recording(plan, hooks, recording, session.index)
        return result
    except (GdbfaultError, KeyboardInterrupt) as exc:
        with shielded():
            _salvage(result, session, t_start)
            died = _qemu_died(session.machine) if isinstance(exc, GdbfaultError) \
                and not isinstance(exc, GuestError) else None
        if died is not None:
            # GDB's error (a broken pipe, "target disconnected") is the symptom: QEMU's end is the cause.
            raise GuestError(f"{describe_exit(died)} (GDB then said: {exc})") from None
        raise
    finally:
        with shielded():
            session.close(keep_dir=spec.keep_run_dir)
            if spec.keep_run_dir and session.machine is not None:
                plan.keep(session.machine.run_dir)
            _note_teardown(result, session.machine)


def _record(plan, hooks, session):
    """The recording run; (Recording, whether the replay starts from the workload's entry).

    A recording of this very guest made before (kept.py) is replayed instead.
    An old kernel's replay starts at the workload's entry, from a snapshot the
    recording saves there: both GDBs start while QEMU starts, the recording's
    (one stop, at the workload's entry) and the replay's, which gets its
    probes while the guest is recorded."""
    found = find_recording(plan, hooks)
    if found is not None:
        if found[1]:                     # (from the entry snapshot: the replay's GDB, as below)
            session.debugger = Debugger(plan.spec.gdb)
            session.ready = _Background(lambda: _ready_replay_debugger(session.debugger, plan))
        return found
    if hooks.writes_guest:               # its writes must be part of the recording too
        return record(plan, HookedDebugger(plan, hooks), hooks.plugins()), False
    if not starts_at_entry(plan):
        return record(plan, plugins=hooks.plugins()), False
    session.debugger = Debugger(plan.spec.gdb)
    session.ready = _Background(lambda: _ready_replay_debugger(session.debugger, plan))
    recording = record(plan, EntrySnapshot(plan), hooks.plugins())
    return recording, recording.snapshot


def _ready_replay_debugger(dbg, plan):
    """The replay's GDB, before its QEMU exists: settings and probes (no target needed)."""
    prepare_debugger(dbg, plan.kernel, plan.arch)
    load_probe_engine(dbg, plan.probes, None, replay=True, arch=plan.arch)


def _start_counting(plan, hooks, session, recording, from_entry):
    """Start the counting run (the replay, or the live guest) under GDB, armed; the time it started.
    Raises _SnapshotStalled when a replay from the entry snapshot does not start."""
    spec, result = plan.spec, plan.result
    config = plan.config
    if recording is not None:
        result.mode.replay_start = "workload entry (snapshot)" if from_entry else "power-on"
        # (a feature's watch, and the check that a snapshot replay starts, read
        # the instruction count on a QMP socket of their own)
        config = replay_config(plan.config, snapshot=ENTRY_SNAPSHOT if from_entry else recording.start_snapshot,
                               watch_qmp=hooks.writes_guest or from_entry, store=recording.store is not None)
    elif hooks.plugins():                # no recording: the live run carries them
        config = plugin_config(config, hooks.plugins(), halted=config.halted)
    result.run.phase = "replay" if recording is not None else "live"
    session.machine = machine = Machine(config)
    machine.start(timeout=plan.left(at_most=20.0))
    if session.ready is not None:        # probes loaded while the guest was recorded
        dbg = session.debugger
        session.ready.wait(plan.left())
        machine.wait_ready(plan.left(at_most=60.0))   # snapshot loaded
        connect(dbg, str(machine.gdb_socket))
        if not from_entry:               # no snapshot after all: the replay boots, count its boot apart
            dbg.console(f"faultprobe arm *{plan.arm:#x}")
    else:
        session.debugger = dbg = Debugger(spec.gdb)
        prepare_debugger(dbg, plan.kernel, plan.arch)
        connect(dbg, str(machine.gdb_socket))
        load_probe_engine(dbg, plan.probes, plan.arm, replay=recording is not None, arch=plan.arch)
    traced = spec.trace and start_tracer(dbg, plan.probes, REPLAY_ICOUNT if recording is not None else
                                         machine.probe_qmp_socket if spec.icount else None, spec.cost_sample)
    if traced and recording is not None and recording.store is not None and spec.cost_sample == 1 \
            and not recording.keyframes:
        # snapshots along the workload, for whoever reopens this recording (inspect): QEMU's
        # monitor saves them (the tracer reads instruction counts through the gdbstub)
        dbg.console(f"faultprobe keyframes {KEYFRAME_INTERVAL} {KEYFRAMES_AT_MOST} "
                    f"{mi_quote(str(machine.probe_qmp_socket))}")
    hooks.on_debugger(dbg, machine, recording=False)
    if plan.boot and not (recording is not None and recording.entry_checked):
        # is the map right? Read at the workload's entry: a replay from the entry snapshot of a
        # recording made before is there already; anything else stops there once
        banner = read_banner(dbg, plan.symbols, plan.image) if from_entry else \
            check_banner(dbg, plan.symbols, plan.image, plan.arm, plan.left(), machine)
        if banner:
            result.kernel.banner, result.kernel.banner_form = banner["text"], banner["form"]
    t_start = time.monotonic()
    starts_at = machine.replay_icount() if from_entry else None
    dbg.mi("-exec-continue")
    if from_entry and not _replay_moves(machine, starts_at):
        # QEMU 7.2 sometimes cannot go on from a snapshot saved while
        # recording (seen about once in 20 runs: the replay stands at the
        # snapshot's instruction). Not one instruction ran, so nothing was
        # counted: replay the same recording from power-on.
        result.mode.snapshot_error = (f"the replay did not start from the snapshot (it stood at guest "
                                      f"instruction {starts_at:,}); replayed from power-on")
        raise _SnapshotStalled()
    return t_start


def _replay_moves(machine, start, patience=SNAPSHOT_START_S):
    """Did a replay started from a snapshot execute anything (its instruction
    count left `start`) within `patience` seconds? A QEMU that already ended counts as moving."""
    from qemu.qmp import QMPError
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        check_stop()
        if machine.poll() is not None:
            return True
        try:
            if machine.replay_icount() != start:
                return True
        except (OSError, EOFError, QMPError):
            return True                  # QMP gone: QEMU's own end is reported instead
        time.sleep(0.05)
    return False


def _supervise(plan, hooks, session, end_at_result=False):
    """Wait for QEMU to end the run; snapshot counts as it goes.

    When GDB goes away, QEMU is given a moment: a QEMU killed under GDB can
    take GDB down with it, and then QEMU's end is the cause to report.
    With end_at_result (an old kernel's replay, or one of a recording that
    gdbfault ended after the workload's result line), QEMU is ended as soon
    as that line is out: every hit of the workload came before it, and the
    replay must not wait at the end of a log that stops soon after it.
    """
    spec, machine, dbg = plan.spec, session.machine, session.debugger
    next_snap = time.monotonic() + SNAPSHOT_EVERY_S
    while True:
        check_stop()
        status = machine.wait(RESULT_POLL_S if end_at_result else 0.2)
        if status is not None:
            return status
        if end_at_result and RESULT_LINE.search(machine.serial_output()):
            return machine.end_after_result()
        if not dbg.alive:
            return _gdb_gone(machine, dbg)
        now = time.monotonic()
        if now >= plan.deadline:
            raise timed_out(spec, machine)
        if now >= next_snap:
            next_snap = now + SNAPSHOT_EVERY_S
            try:
                session.snapshot = read_counts(dbg, machine.run_dir)
            except GdbfaultError:
                if not dbg.alive:
                    return _gdb_gone(machine, dbg)
                if machine.poll() is not None:
                    return machine.poll()
                raise
            hooks.watch(machine)
            if plan.progress is not None:
                guest = parse_guest_output(machine.serial_output())
                done, total = guest["progress"] or (0, spec.iterations or 0)
                plan.progress(done, total, session.snapshot["total_hits"])


def _finish(plan, hooks, session, status, recording, t_start):
    """The run ended: its last counts, exit, checks against the recording and the guest."""
    result = plan.result
    machine, dbg = session.machine, session.debugger
    if dbg.alive:                        # else: keep the last snapshot
        try:
            session.snapshot = read_counts(dbg, machine.run_dir)
        except GdbfaultError:
            if status == EXIT_CLEAN:     # a QEMU that died can take GDB along: report QEMU
                raise
        if recording is not None and (session.snapshot or {}).get("trace", {}).get("icount"):
            index = machine.run_dir / "faults.idx"
            try:
                dbg.console(f"faultprobe index {index}", timeout=300)
                session.index = index
            except GdbfaultError:        # no index: the recording is kept without one
                pass
    _fill(result, session, t_start)
    result.run.exit_status = status
    result.run.exit = describe_exit(status)
    if machine.ended_after_result and status == EXIT_CLEAN:
        result.run.exit = ENDED_AFTER_RESULT + (" (the recording was ended there too)"
                                                if recording is not None and recording.ended_after_result else "")
    machine.check_exit(status)
    if recording is not None:
        _check_replay(result, recording, machine)
    hooks.finish(result, session.snapshot)
    if result.guest is None and not result.workload.own:
        raise GuestError(f"the workload printed no GDBFAULT-RESULT line (serial log: {machine.serial_log})")
    result.run.complete = True
    return result


def _check_replay(result, recording, machine):
    """The replay must have printed what the recording printed."""
    replayed = parse_guest_output(machine.serial_output())["result"]
    original = parse_guest_output(recording.serial)["result"]
    result.record.guest = original
    if original != replayed:
        raise GdbfaultError("the replay diverged from the recording (the guest's summaries differ)")


def _gdb_gone(machine, dbg):
    """QEMU's exit status if QEMU ended too; else GDB's death is the error."""
    status = machine.wait(1.0)
    if status is not None:
        return status
    raise GdbfaultError(f"GDB died during the run; last message: {dbg.last_log() or 'none'}")


def _qemu_died(machine):
    """QEMU's exit status if it ended by itself other than cleanly (given a moment), else None."""
    if machine is None or machine.proc is None:
        return None
    status = machine.poll()
    if status is None:
        status = machine.wait(0.5)
    return status if status not in (None, EXIT_CLEAN) else None


def _note_teardown(result, machine):
    """After teardown: QEMU's real exit status, and whether gdbfault had to stop it."""
    if machine is None or machine.proc is None or result.run.complete:
        return
    result.run.exit_status = machine.poll()
    result.run.exit = describe_exit(machine.poll())
    result.run.stopped_by_gdbfault = machine.stopped_by_us


def _fill(result, session, t_start, open_label=None, partial=False):
    """The counts of the last snapshot, the guest's summary and the timings, into the result."""
    machine = session.machine
    wall = time.monotonic() - t_start if t_start else None
    fill_result(result, measured(session.snapshot, machine.serial_output() if machine else None, wall),
                open_label, partial)


def _salvage(result, session, t_start):
    """Best effort: the freshest counts we can still get, after a failure."""
    dbg, machine = session.debugger, session.machine
    if dbg is not None and dbg.alive and machine is not None:
        try:
            session.snapshot = read_counts(dbg, machine.run_dir)
        except BaseException:
            pass
    try:
        _fill(result, session, t_start,
              open_label=open_path_label(machine.poll() if machine is not None else None), partial=True)
    except Exception:
        pass
    if machine is not None:
        result.run.exit_status = machine.poll()
        result.run.exit = describe_exit(machine.poll())


class _Background(threading.Thread):
    """One piece of set-up that runs while the main thread waits for something else."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self._work, self._error = work, None
        self.start()

    def run(self):
        try:
            self._work()
        except BaseException as exc:     # handed to the main thread by wait()
            self._error = exc

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while self.is_alive():
            check_stop()
            if time.monotonic() >= deadline:
                raise GdbfaultError(f"GDB was not ready within {timeout:.0f} s")
            self.join(0.05)
        if self._error is not None:
            raise self._error
