"""The recording run of the GDB backend: the guest recorded once (`-icount ...,rr=record`), for a replay to count in.

Breakpoint stops move virtual time under -icount (while QEMU is stopped
its clock follows real time), so a guest watched live would see timer
interrupts at other places and other rdtsc values. A replay re-injects
every interrupt at its recorded instruction count: under GDB it executes
exactly the instructions the unobserved run did.

A recording runs with no debugger, except when an *attendant* needs one:
- `EntrySnapshot` (an old kernel): one stop at the workload's entry to
  check the banner and `savevm` the snapshot its replay starts from; the
  recording then runs on with no debugger and is ended as soon as the
  workload's result line is out (the kernel's power-off is not measured);
- `HookedDebugger` (a feature that writes guest memory, e.g. a live patch):
  GDB stays attached with only the feature's breakpoints, because debugger
  writes are not part of a recording and must happen in the replay alike.

The recording is made in the run's guest folder (machine/config.py): the
replay log `guest.rr` beside the guest's files, and, where qemu-img is at hand,
a snapshot store with the VM snapshot of its first instruction (and an old
kernel's at the workload's entry), so that it can be kept and reopened
(recordings/, `gdbfault inspect`).
"""
import re
import time
from dataclasses import dataclass
from pathlib import Path

from gdbfault.base.errors import GdbfaultError, GuestError, TimedOut
from gdbfault.base.lifecycle import shielded
from gdbfault.kernels.banner import read_banner, stop_at_entry
from gdbfault.machine.config import RECORD_LOG, START_SNAPSHOT, STATE_STORE, plugin_config, record_config
from gdbfault.machine.gdbmi import Debugger
from gdbfault.machine.qemu import (ENDED_AFTER_RESULT, EXIT_CLEAN, Machine, describe_exit, snapshot_store,
                                   snapshot_store_available)
from gdbfault.model.result import Record
from gdbfault.recordings.store import now_text
from gdbfault.probing.gdb_session import connect, load_probe_engine, prepare_debugger, read_counts

__all__ = ["Recording", "record", "starts_at_entry", "EntrySnapshot", "HookedDebugger", "ENTRY_SNAPSHOT",
           "RESULT_LINE", "RESULT_POLL_S", "timed_out", "serial_tail"]

# The VM snapshot an old kernel's recording saves at the workload's entry,
# where its replay starts (-icount ...,rr=replay,rrsnapshot=NAME).
ENTRY_SNAPSHOT = "gdbfault-entry"
# How often a run that ends at the workload's result line looks for it.
RESULT_POLL_S = 0.02
# A complete GDBFAULT-RESULT line: the workload wrote it to the end (model/truth.py reads it).
RESULT_LINE = re.compile(r"^GDBFAULT-RESULT \{.*\}[ \t\r]*\n", re.M)


@dataclass
class Recording:
    """A finished recording: its log file and what the guest did in it."""

    file: Path
    status: int                     # QEMU's exit status
    serial: str                     # what the guest printed
    entry_checked: bool = False     # it stopped at the workload's entry and checked the banner (EntrySnapshot)
    snapshot: bool = False          # ... and saved a snapshot there
    ended_after_result: bool = False
    counts: dict = None             # the attending GDB's counts (HookedDebugger)
    store: str = None               # the snapshot store in the guest folder (None: no qemu-img, no snapshots)
    start_snapshot: str = None      # the snapshot of its first instruction, in the store
    made: str = None                # when (recordings.store.now_text)
    reused: str = None              # "cache" / "kept": made by an earlier run, replayed by this one
    keyframes: bool = False         # its store holds the snapshots a counting replay saves (keyframes)


def serial_tail(text, n=120):
    return text.strip()[-n:]


def timed_out(spec, machine, where=""):
    """The --timeout error, with what the guest printed last."""
    return TimedOut(f"the guest did not finish within --timeout {spec.timeout_s:g} s (hung?){where}; "
                    f"serial log tail: {serial_tail(machine.serial_output())!r}")


def record(plan, attendant=None, plugins=()):
    """Run the guest once, recording it for replay (see the module docstring); a Recording.
    `plugins`: -plugin arguments of TCG plugins the recording carries (RunHooks.plugins).

    result.record (a model.result.Record) says how the recording ended, also when it failed.
    """
    spec, result = plan.spec, plan.result
    rec_dir = plan.temp_dir("gdbfault-rec-")      # its sockets and console; the log goes to the guest folder
    store = _snapshot_store(plan)
    config = record_config(plan.config, RECORD_LOG, halted=attendant is not None, store=store is not None)
    if plugins:
        config = plugin_config(config, plugins, halted=config.halted)
    rec = Machine(config, run_dir=rec_dir)
    made = now_text()
    t0 = time.monotonic()
    result.run.phase = "record"
    status, serial, counts = None, "", None
    try:
        rec.start(timeout=plan.left(at_most=20.0))
        if attendant is not None:
            attendant.start(rec)
        status = _wait(plan, rec, attendant)
        if status is None:
            raise timed_out(spec, rec, " while recording")
        serial = rec.serial_output()
        if attendant is not None:
            counts = attendant.counts()
        rec.check_recording_exit(status)
    finally:
        with shielded():
            if attendant is not None:
                attendant.close()
            rec.close(keep_dir=True)     # the record file lives there until the replay is done
            _note(result, rec, status, t0)
    recording = Recording(plan.guest_dir / RECORD_LOG, status, serial, isinstance(attendant, EntrySnapshot),
                          getattr(attendant, "saved", False), rec.ended_after_result, counts, store=store,
                          start_snapshot=START_SNAPSHOT if store else None, made=made)
    result.record.made = made
    if attendant is not None:
        attendant.done(recording)
    return recording


def starts_at_entry(plan):
    """Does this run's recording stop once at the workload's entry to save the snapshot its replay
    starts from (an old kernel: EntrySnapshot)?"""
    return plan.arm is not None and plan.boot is not None and plan.boot.replay_from_entry


def _snapshot_store(plan):
    """The name of the recording's snapshot store in the guest folder: the boot disk's overlay, else a
    new empty one; None without qemu-img (then no snapshot: the recording cannot be reopened)."""
    if plan.config.store is not None:
        return plan.config.store
    if not snapshot_store_available():
        return None
    snapshot_store(plan.guest_dir / STATE_STORE)
    return STATE_STORE


def _wait(plan, rec, attendant):
    """The recording's exit status (None at the deadline). A recording that ends at the
    result line is ended by gdbfault once a complete one is out (the status QEMU quit with)."""
    end_at_result = getattr(attendant, "ends_at_result", False)
    while True:
        status = rec.wait_until(min(plan.deadline, time.monotonic() + (RESULT_POLL_S if end_at_result else 0.2)))
        if status is not None or time.monotonic() >= plan.deadline:
            return status
        if attendant is not None:
            attendant.during()
        if end_at_result and RESULT_LINE.search(rec.serial_output()):
            return rec.end_after_result()


def _note(result, rec, status, t0):
    """result.record: how the recording ended (and the run's exit when it went wrong there)."""
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


class EntrySnapshot:
    """An old kernel's recording: one stop at the workload's entry, then no debugger.

    At the stop it checks the banner (is the System.map this kernel's?) and
    saves the snapshot the replay starts from. A debugger stop in a
    recording can move the guest's clock; this one comes before the
    workload's first instruction, so at most the boot looks longer to the
    guest (the oldboot fixture's workload measured the same 3,238,560 cycles
    for 50 iterations with and without the stop). The replay reproduces the
    recording exactly, stop included: counts and path costs are exact for
    that recording. Another recording can place a timer tick elsewhere (the
    GRUB path records with sleep=on, and the stop's length follows the
    host), so a path's maximum cost can differ between runs.
    """

    ends_at_result = True

    def __init__(self, plan):
        self.plan = plan
        self.dbg = Debugger(plan.spec.gdb)   # started now, while QEMU starts
        self.saved = False

    def start(self, rec):
        plan, result = self.plan, self.plan.result
        dbg = self.dbg
        try:
            prepare_debugger(dbg, plan.kernel, plan.arch)
            rec.wait_ready(plan.left(at_most=60.0))      # (its gdbstub's socket exists before QEMU listens)
            connect(dbg, str(rec.gdb_socket))
            try:
                stop_at_entry(dbg, plan.arm, plan.left(), rec)
            except GuestError as exc:        # a panic at boot: said as for a recording without the stop
                raise GuestError(f"the recording run failed, no replay attempted: {exc}") from None
            except GdbfaultError:
                if time.monotonic() < plan.deadline:
                    raise
                raise timed_out(plan.spec, rec, " while recording") from None
            banner = read_banner(dbg, plan.symbols, plan.image)
            if banner:
                result.kernel.banner, result.kernel.banner_form = banner["text"], banner["form"]
            said = dbg.console(f"monitor savevm {ENTRY_SNAPSHOT}", timeout=120)
            self.saved = "error" not in said.lower()
            if not self.saved:               # the replay then boots from power-on
                result.mode.snapshot_error = said.strip()[:200]
            try:
                dbg.mi("-target-detach")    # QEMU's gdbstub lets the guest run on
            except GdbfaultError:
                # The guest ran on at once and its QEMU may end before GDB has
                # finished detaching ("Broken pipe"): the recording's own exit
                # status says how it went.
                pass
        finally:
            self.close()

    def during(self):
        pass

    def counts(self):
        return None

    def done(self, recording):
        pass

    def close(self):
        with shielded():
            self.dbg.close()


class HookedDebugger:
    """A recording with GDB attached for a feature that writes guest memory (RunHooks.writes_guest)."""

    ends_at_result = False

    def __init__(self, plan, hooks):
        self.plan, self.hooks = plan, hooks
        self.dbg = None

    def start(self, rec):
        self.rec = rec
        self.dbg = dbg = Debugger(self.plan.spec.gdb)
        prepare_debugger(dbg, self.plan.kernel, self.plan.arch)
        rec.wait_ready(self.plan.left(at_most=60.0))
        connect(dbg, str(rec.gdb_socket))
        load_probe_engine(dbg, [], None, arch=self.plan.arch)
        self.hooks.on_debugger(dbg, rec, recording=True)
        dbg.mi("-exec-continue")

    def during(self):
        if not self.dbg.alive:
            raise GuestError(f"GDB died while recording: {self.dbg.last_log() or 'no message'}")

    def counts(self):
        return read_counts(self.dbg, self.rec.run_dir)

    def done(self, recording):
        self.hooks.on_recorded(recording.counts)

    def close(self):
        if self.dbg is not None:
            self.dbg.close()
