"""The GDB backend: one run recorded, then counted in its replay under GDB.

`run_with_gdb` gets a run that `run.run_qemu` has resolved (probes, boot
setup, machine config, the RunResult skeleton) and measures it:
- it records the guest with no debugger attached (`-icount rr=record`),
  then replays it under GDB, where gdbscripts/faultprobe.py counts and
  traces every probe hit; a replay re-injects every interrupt at its
  recorded instruction count, so breakpoints cannot change what the guest does;
- an old kernel's recording stops once at the workload's entry (banner
  check, VM snapshot) and its replay starts there; both end at the
  workload's result line;
- without icount or with --live it counts live, in one run.
Counts are snapshotted about once a second, so whatever ends the run early
leaves its counts in the result.
"""
import re
import threading
import time

from gdbfault.base.errors import GdbfaultError, GuestError, TimedOut
from gdbfault.machine.gdbmi import Debugger
from gdbfault.base.lifecycle import check_stop, shielded
from gdbfault.machine.config import record_config, replay_config
from gdbfault.probing.measure import fill_result, open_path_label
from gdbfault.probing.gdb_session import (connect, lend_qmp, load_probe_engine, measured, prepare_debugger,
                                    read_counts, start_tracer)
from gdbfault.machine.qemu import ENDED_AFTER_RESULT, EXIT_CLEAN, Machine, describe_exit, private_dir
from gdbfault.model.result import Record
from gdbfault.model.truth import parse_guest_output
from gdbfault.kernels.workloads import is_own_workload

__all__ = ["run_with_gdb", "ENTRY_SNAPSHOT"]

SNAPSHOT_EVERY_S = 1.0
# The VM snapshot an old kernel's recording saves at the workload's entry,
# where its replay starts (-icount ...,rr=replay,rrsnapshot=NAME).
ENTRY_SNAPSHOT = "gdbfault-entry"
# How often a recording that ends at the workload's result line looks for it.
RESULT_POLL_S = 0.02
# A replay started from a snapshot must execute its first instruction within this.
SNAPSHOT_START_S = 5.0
# A complete GDBFAULT-RESULT line: the workload wrote it to the end (truth.py reads it).
_RESULT_LINE = re.compile(r"^GDBFAULT-RESULT \{.*\}[ \t\r]*\n", re.M)


class _Session:
    """The live parts of a run, torn down in one place."""

    def __init__(self):
        self.machine = None
        self.debugger = None
        self.snapshot = None          # last counts read from GDB
        self.watch = None             # called about once a second; raises when the run went wrong

    def close(self, keep_dir=False):
        if self.debugger is not None:
            self.debugger.close()
        if self.machine is not None:
            self.machine.close(keep_dir=keep_dir)




def run_with_gdb(spec, result, config, symbols, probes, arm, boot, cleanup, progress, deadline, live=None):
    """Measure the resolved run under GDB (see the module docstring); return the filled RunResult."""
    kernel = config.kernel
    session = _Session()
    t_start = None
    replay = spec.replay and spec.icount
    result.mode.replay = replay
    # An old kernel's replay starts at the workload's entry, from a snapshot
    # the recording saves there; it ends where the recording was ended.
    from_entry = (replay and live is None and arm is not None and boot is not None
                  and boot.replay_from_entry)
    ready = None
    if live is not None:
        from gdbfault.livepatch import hooks as livepatch_run
        plan = live[0].write_plan(_temp_dir(cleanup) / "livepatch-plan.json",
                                  unpatch=spec.live_patch.unpatch_at is not None)
        points = livepatch_run.WorkloadPoints(config.initrd[0])
    try:
        if replay and live is not None:    # the patch must be part of the recording too

            def attach_recorder(dbg, address):
                prepare_debugger(dbg, kernel)
                connect(dbg, address)
                load_probe_engine(dbg, [], None)
                lend_qmp(dbg)
            record_file, recorded = livepatch_run.record_with_patch(
                spec, config, result, cleanup, plan, points, attach_recorder, deadline)
        elif from_entry:
            # Both GDBs start now, while QEMU starts: the recording's (one stop,
            # at the workload's entry) and the replay's, which gets its probes
            # while the guest is recorded.
            recorder = Debugger(spec.gdb)
            try:
                session.debugger = Debugger(spec.gdb)
                ready = _Background(lambda: _ready_replay_debugger(session.debugger, kernel, probes))
                record_file, recorded = _record(
                    spec, config, result, cleanup, deadline,
                    entry=lambda rec: _stop_recording_at_entry(recorder, rec, kernel, symbols, boot, arm,
                                                               result, spec, deadline))
            finally:
                with shielded():
                    recorder.close()
            from_entry = recorded["snapshot"]
        elif replay:
            record_file, recorded = _record(spec, config, result, cleanup, deadline)
        run_config = config
        entry_checked = ready is not None    # the recording stopped at the entry and checked the banner
        while True:                      # twice at most: a snapshot replay that does not start
            if replay:
                result.mode.replay_start = "workload entry (snapshot)" if from_entry else "power-on"
                # (a live patch's replay watchdog, and the check that a snapshot replay
                # starts, read the instruction count on a QMP socket of their own)
                run_config = replay_config(config, record_file, ENTRY_SNAPSHOT if from_entry else None,
                                           watch_qmp=live is not None or from_entry)
            result.run.phase = "replay" if replay else "live"
            session.machine = Machine(run_config)
            machine = session.machine
            machine.start(timeout=min(20.0, max(1.0, deadline - time.monotonic())))
            if ready is not None:
                dbg = session.debugger
                ready.wait(max(1.0, deadline - time.monotonic()))
                machine.wait_ready(min(60.0, max(1.0, deadline - time.monotonic())))   # snapshot loaded
                connect(dbg, str(machine.gdb_socket))
                if not from_entry:       # no snapshot after all: the replay boots, count its boot apart
                    dbg.console(f"faultprobe arm *{arm:#x}")
            else:
                session.debugger = dbg = Debugger(spec.gdb)
                prepare_debugger(dbg, kernel)
                connect(dbg, str(machine.gdb_socket))
                load_probe_engine(dbg, probes, arm, replay=replay)
            if spec.trace:
                start_tracer(dbg, probes, machine.probe_qmp_socket if spec.icount else None,
                             spec.cost_sample)
            if live is not None:
                if replay:
                    session.watch = livepatch_run.ReplayWatch(machine, result)
                if spec.icount:
                    lend_qmp(dbg)
                livepatch_run.arm(dbg, plan, points, machine.probe_qmp_socket if spec.icount else None)
                if spec.timeline and spec.trace and spec.icount:
                    dbg.console("faultprobe timeline")
            if boot and not entry_checked:   # stops once at the workload's entry: is the map right?
                from gdbfault.kernels.boot import check_banner
                banner = check_banner(dbg, symbols, boot.image, arm, max(1.0, deadline - time.monotonic()),
                                      machine)
                if banner:
                    result.kernel.banner, result.kernel.banner_form = banner["text"], banner["form"]
            t_start = time.monotonic()
            starts_at = machine.replay_icount() if from_entry else None
            dbg.mi("-exec-continue")
            if from_entry and not _replay_moves(machine, starts_at):
                # QEMU 7.2 sometimes cannot go on from a snapshot saved while
                # recording (seen about once in 20 runs: the replay stands at
                # the snapshot's instruction). Not one instruction ran, so
                # nothing was counted: replay the same recording from power-on.
                result.mode.snapshot_error = (f"the replay did not start from the snapshot (it stood "
                                              f"at guest instruction {starts_at:,}); replayed from "
                                              "power-on")
                with shielded():
                    session.close()
                    if ready is not None:
                        ready.join(5.0)
                session, ready, from_entry = _Session(), None, False
                continue
            break
        # An old kernel's replay ends at the result line too, also when its
        # recording powered off before gdbfault could end it (the power-off
        # path would only cost time: it is not measured).
        status = _supervise(spec, session, deadline, progress, end_at_result=replay and (
            from_entry or recorded.get("ended_after_result", False)))
        if dbg.alive:                    # else: keep the last snapshot
            try:
                session.snapshot = read_counts(dbg, machine.run_dir)
            except GdbfaultError:
                if status == EXIT_CLEAN:  # a QEMU that died can take GDB along: report QEMU
                    raise
        _fill(result, session, t_start)
        result.run.exit_status = status
        result.run.exit = describe_exit(status)
        if machine.ended_after_result and status == EXIT_CLEAN:
            result.run.exit = ENDED_AFTER_RESULT + (" (the recording was ended there too)"
                                                    if recorded.get("ended_after_result") else "")
        machine.check_exit(status)
        if replay:
            _check_replay(result, recorded, machine)
        if live is not None:
            _fill_live_patch(result, session.snapshot, live, spec)
        if result.guest is None and not is_own_workload(spec.workload):
            raise GuestError("the workload printed no GDBFAULT-RESULT line "
                             f"(serial log: {machine.serial_log})")
        result.run.complete = True
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
            if ready is not None:
                ready.join(5.0)          # GDB is gone: its commands fail at once
            _note_teardown(result, session.machine)


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




def _temp_dir(cleanup):
    folder = private_dir("gdbfault-run-")
    cleanup.append(folder)
    return folder


def _fill_live_patch(result, snap, live, spec):
    """Before/after the patch, its checks, and the proof the replay ran what was recorded."""
    from gdbfault.livepatch import hooks as livepatch_run
    patch, at = live
    livepatch_run.fill_live_patch(result, snap, patch, at, int(result.iterations), spec.live_patch.unpatch_at)
    livepatch_run.check_consistency(result, snap)
    result.checks = livepatch_run.live_patch_checks(result, patch)
    livepatch_run.timing_perturbation(result)


def _record(spec, config, result, cleanup, deadline, entry=None):
    """Run the guest once with no debugger attached, recording it for replay.

    Breakpoint stops move virtual time under -icount (while QEMU is stopped
    its clock follows real time), so a guest watched live would see timer
    interrupts at other places and other rdtsc values. A replay re-injects
    every interrupt at its recorded instruction count: under GDB it executes
    exactly the instructions the unobserved run did.

    With `entry` (an old kernel), the recording starts halted and
    `entry(machine)` stops it once, at the workload's entry, to check the
    banner and save the snapshot its replay starts from (True when saved);
    the recording is then ended as soon as the workload's result line is
    out: the kernel's power-off is not part of the measurement.
    """
    rec_dir = private_dir("gdbfault-rec-")
    cleanup.append(rec_dir)
    record_file = rec_dir / "guest.rr"
    rec = Machine(record_config(config, record_file, halted=entry is not None), run_dir=rec_dir)
    t0 = time.monotonic()
    result.run.phase = "record"
    status, snapshot = None, False
    try:
        rec.start(timeout=min(20.0, max(1.0, deadline - time.monotonic())))
        if entry is not None:
            snapshot = entry(rec)
        status = _wait_recording(rec, deadline, end_at_result=entry is not None)
        if status is None:
            raise TimedOut(f"the guest did not finish within --timeout {spec.timeout_s:g} s (hung?) while "
                           f"recording; serial log tail: {_tail(rec.serial_output())!r}")
        serial = rec.serial_output()
        rec.check_recording_exit(status)
    finally:
        with shielded():
            rec.close(keep_dir=True)     # the record file lives there until the replay is done
            result.record = Record(exit_status=rec.poll(), exit=describe_exit(rec.poll()),
                                   wall_s=round(time.monotonic() - t0, 3))
            if rec.ended_after_result:
                result.record.exit = ENDED_AFTER_RESULT
            elif rec.stopped_by_us:
                result.record.exit = "stopped by gdbfault"
                result.run.stopped_by_gdbfault = True
                result.run.exit_status = rec.poll()
            elif status is not None and status != EXIT_CLEAN:
                result.run.exit_status = status
                result.run.exit = describe_exit(status) + " while recording"
    return record_file, {"status": status, "serial": serial, "snapshot": snapshot,
                         "ended_after_result": rec.ended_after_result}


def _wait_recording(rec, deadline, end_at_result):
    """The recording's exit status (None at the deadline). With end_at_result,
    QEMU is ended once a complete result line is out (the status it quit with)."""
    if not end_at_result:
        return rec.wait_until(deadline)
    while True:
        status = rec.wait_until(min(deadline, time.monotonic() + RESULT_POLL_S))
        if status is not None or time.monotonic() >= deadline:
            return status
        if _RESULT_LINE.search(rec.serial_output()):
            return rec.end_after_result()


def _stop_recording_at_entry(dbg, rec, kernel, symbols, boot, arm, result, spec, deadline):
    """The recording's one stop, at the workload's entry: check the banner
    (is the System.map this kernel's?), save the snapshot the replay starts
    from, and let the guest go on with no debugger. True when saved.

    A debugger stop in a recording can move the guest's clock (FACTS.md);
    this one comes before the workload's first instruction, so at most the
    boot looks longer to the guest (the oldboot fixture's workload measured
    the same 3,238,560 cycles for 50 iterations with and without the stop).
    The replay reproduces the recording exactly, stop included: counts and
    path costs are exact for that recording. Another recording can place a
    timer tick elsewhere (the GRUB path records with sleep=on, and the stop's
    length follows the host), so a path's maximum cost can differ between runs.
    """
    from gdbfault.kernels.boot import read_banner, stop_at_entry
    try:
        prepare_debugger(dbg, kernel)
        connect(dbg, str(rec.gdb_socket))
        try:
            stop_at_entry(dbg, arm, max(1.0, deadline - time.monotonic()), rec)
        except GuestError as exc:        # a panic at boot: said as for a recording without the stop
            raise GuestError(f"the recording run failed, no replay attempted: {exc}") from None
        except GdbfaultError:
            if time.monotonic() < deadline:
                raise
            raise TimedOut(f"the guest did not finish within --timeout {spec.timeout_s:g} s (hung?) while "
                           f"recording; serial log tail: {_tail(rec.serial_output())!r}") from None
        banner = read_banner(dbg, symbols, boot.image)
        if banner:
            result.kernel.banner, result.kernel.banner_form = banner["text"], banner["form"]
        said = dbg.console(f"monitor savevm {ENTRY_SNAPSHOT}", timeout=120)
        saved = "error" not in said.lower()
        if not saved:                    # the replay then boots from power-on
            result.mode.snapshot_error = said.strip()[:200]
        try:
            dbg.mi("-target-detach")    # QEMU's gdbstub lets the guest run on
        except GdbfaultError:
            # The guest ran on at once and its QEMU may end before GDB has
            # finished detaching ("Broken pipe"): the recording's own exit
            # status says how it went.
            pass
        return saved
    finally:
        with shielded():
            dbg.close()


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


def _ready_replay_debugger(dbg, kernel, probes):
    """The replay's GDB, before its QEMU exists: settings and probes (no target needed)."""
    prepare_debugger(dbg, kernel)
    load_probe_engine(dbg, probes, None, replay=True)


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


def _check_replay(result, recorded, machine):
    """The replay must have printed what the recording printed."""
    replayed = parse_guest_output(machine.serial_output())["result"]
    original = parse_guest_output(recorded["serial"])["result"]
    result.record.guest = original
    if original != replayed:
        raise GdbfaultError("the replay diverged from the recording (the guest's summaries differ)")


def _supervise(spec, session, deadline, progress, end_at_result=False):
    """Wait for QEMU to end the run; snapshot counts as it goes.

    When GDB goes away, QEMU is given a moment: a QEMU killed under GDB can
    take GDB down with it, and then QEMU's end is the cause to report.
    With end_at_result (an old kernel's replay, or one of a recording that
    gdbfault ended after the workload's result line), QEMU is ended as soon
    as that line is out: every hit of the workload came before it, and the
    replay must not wait at the end of a log that stops soon after it.
    """
    machine, dbg = session.machine, session.debugger
    next_snap = time.monotonic() + SNAPSHOT_EVERY_S
    while True:
        check_stop()
        status = machine.wait(RESULT_POLL_S if end_at_result else 0.2)
        if status is not None:
            return status
        if end_at_result and _RESULT_LINE.search(machine.serial_output()):
            return machine.end_after_result()
        if not dbg.alive:
            return _gdb_gone(machine, dbg)
        now = time.monotonic()
        if now >= deadline:
            raise TimedOut(f"the guest did not finish within --timeout {spec.timeout_s:g} s (hung?); "
                           f"serial log tail: {_tail(machine.serial_output())!r}")
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
            if session.watch is not None:
                session.watch()
            if progress is not None:
                guest = parse_guest_output(machine.serial_output())
                done, total = guest["progress"] or (0, spec.iterations or 0)
                progress(done, total, session.snapshot["total_hits"])


def _gdb_gone(machine, dbg):
    """QEMU's exit status if QEMU ended too; else GDB's death is the error."""
    status = machine.wait(1.0)
    if status is not None:
        return status
    raise GdbfaultError(f"GDB died during the run; last message: {dbg.last_log() or 'none'}")


def _tail(text, n=120):
    text = text.strip()
    return text[-n:]


def _fill(result, session, t_start, open_label=None):
    """The counts of the last snapshot, the guest's summary and the timings, into the result."""
    machine = session.machine
    wall = time.monotonic() - t_start if t_start else None
    fill_result(result, measured(session.snapshot, machine.serial_output() if machine else None, wall),
                open_label)


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
              open_label=open_path_label(machine.poll() if machine is not None else None))
    except Exception:
        pass
    if machine is not None:
        result.run.exit_status = machine.poll()
        result.run.exit = describe_exit(machine.poll())
