"""One measured run: boot a kernel under QEMU, count its fault path, report.

`run_qemu(spec)` is `gdbfault attach --qemu`: it starts a halted QEMU, has
GDB arm the probes (counted inside GDB by gdbscripts/faultprobe.py), lets the
guest run its workload to the end, and returns a RunResult dict (the JSON
schema in report.py). Whatever happens — a guest that oopses or hangs, QEMU
or GDB killed, Ctrl-C — the counts measured so far are kept in the result
attached to the raised error, and no QEMU or GDB process is left behind.
"""
import json
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault import __version__
from gdbfault.errors import GdbfaultError, GuestError
from gdbfault.gdb import Debugger, gdb_version, mi_quote
from gdbfault.lifecycle import Stopped, check_stop, shielded
from gdbfault.locations import GDBSCRIPTS, lab_kernel
from gdbfault.paths import cost_stats, summarise_paths, user_fault_searches
from gdbfault.bootimage import read_image
from gdbfault.profiles import ENTRY, load_profile, pick_profile, resolve_probes, role_alternatives
from gdbfault.machine_config import machine_config, record_config, replay_config
from gdbfault.realkernel import icount_shift, truth_model
from gdbfault.qemu import (ENDED_AFTER_RESULT, EXIT_CLEAN, EXIT_OOPS, EXIT_PANIC, Machine, describe_exit,
                           private_dir, qemu_version)
from gdbfault.symbols import is_elf, load_symbols
from gdbfault.truth import compare_with_guest, parse_guest_output
from gdbfault.workloads import is_own_workload, workload_file

__all__ = ["RunSpec", "RunFailed", "TimedOut", "run_qemu", "validate_spec", "read_counts", "elf_entry",
           "SCHEMA", "MAX_ITERATIONS"]

SCHEMA = "gdbfault.run/1"
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
# The workloads parse iterations=N into a u32 and refuse what could overflow
# it (qemu/workloads/driver.c): the largest N they take.
MAX_ITERATIONS = 4294967289


@dataclass
class RunSpec:
    """Everything that defines one run (what the CLI flags become)."""

    kernel: str = "lab"                  # "lab" or a path
    variant: str = "vanilla"             # lab kernel variant
    system_map: str = None
    workload: str = "mprotect"
    iterations: int = None
    append: str = ""
    profile: str = None                  # name or file; None = pick from the symbols
    extra_probes: list = field(default_factory=list)   # [(role, symbol)]
    icount: bool = True
    timeout_s: float = 600.0
    memory_mb: int = 64
    gdb: str = "gdb"
    qemu: str = "qemu-system-i386"
    keep_run_dir: bool = False
    trace: bool = True                   # follow fault paths (costs need icount)
    backend: str = "gdb"                 # "gdb" (breakpoints) or "plugin" (TCG plugin, no stops)
    replay: bool = True                  # record without GDB, count in the replay (icount only)
    cost_sample: int = 1                 # cost every Nth fault only
    live_patch: object = None            # livepatch_run.LivePatchSpec: patch the kernel mid-run
    timeline: bool = False               # keep each traced path's instruction count (--plot of a live patch)

    def kernel_files(self):
        if self.kernel == "lab":
            return lab_kernel(self.variant)
        kernel = Path(self.kernel)
        if not kernel.is_file():
            raise GdbfaultError(f"kernel file not found: {kernel}")
        return kernel, Path(self.system_map) if self.system_map else None

    def kernel_model(self, profile_name):
        """Which ground-truth rules apply (truth.expected_hits): the lab
        variant's own, else those of the kernel's probe profile."""
        return f"lab-{self.variant}" if self.kernel == "lab" else profile_name

    def command_line(self):
        words = []
        if self.iterations is not None:
            words.append(f"iterations={int(self.iterations)}")
        if self.live_patch is not None and self.iterations is not None:
            at = self.live_patch.at if self.live_patch.at is not None else self.iterations // 2
            words.append(f"mark={int(at)}")     # the workload calls gdbfault_mark() there
            if self.live_patch.unpatch_at is not None:
                words.append(f"mark2={int(self.live_patch.unpatch_at)}")
        if self.append:
            words.append(self.append)
        return " ".join(words)


class TimedOut(GuestError):
    """The whole run (record, replay and all) did not end within --timeout."""


class RunFailed(GdbfaultError):
    """A run that ended early; `.result` holds what was measured until then."""

    def __init__(self, cause, result):
        super().__init__(str(cause))
        self.cause = cause
        self.result = result
        self.exit_code = getattr(cause, "exit_code", 2)


def elf_entry(path):
    """The entry point of an ELF file (the workload's first user instruction)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        return ELFFile(f).header["e_entry"]


class _Session:
    """The live parts of a run, torn down in one place."""

    def __init__(self):
        self.machine = None
        self.debugger = None
        self.snapshot = None          # last counts read from GDB
        self.watch = None             # called about once a second; raises when the run went wrong

    def close(self, keep_dir=False):
        if self.watch is not None and hasattr(self.watch, "close"):
            self.watch.close()
        if self.debugger is not None:
            self.debugger.close()
        if self.machine is not None:
            self.machine.close(keep_dir=keep_dir)


def _prepare_debugger(dbg, kernel):
    for cmd in ("-gdb-set mi-async on", "-gdb-set pagination off", "-gdb-set confirm off",
                "-gdb-set breakpoint pending off"):
        dbg.mi(cmd)
    dbg.console("set architecture i386")
    if is_elf(kernel):
        # Names in backtraces for people who look; probes go by address anyway.
        dbg.mi(f"-file-exec-and-symbols {mi_quote(str(kernel))}", timeout=120)


def _connect(dbg, address):
    """target remote ADDRESS (a unix socket path or host:port)."""
    if any(c.isspace() for c in address):
        # GDB's `target remote` takes the rest of the line literally, quotes included.
        raise GdbfaultError(f"gdbstub address has white space, which GDB cannot take: {address!r}")
    dbg.mi(f"-target-select remote {address}", timeout=30)


def _load_probe_engine(dbg, probes, arm_address, replay=False):
    dbg.console(f"source {GDBSCRIPTS / 'faultprobe.py'}")
    dbg.console("help faultprobe")     # fails loudly if the script did not load
    if replay:
        # Only a live guest gets duplicate stop reports: a replay saves the
        # filter's nine register reads per stop (counts are checked anyway).
        dbg.console("faultprobe dedup off")
    for p in probes:
        dbg.console(f"faultprobe add {mi_quote(p.role)} *{p.address:#x} {p.symbol}")
    if arm_address is not None:
        dbg.console(f"faultprobe arm *{arm_address:#x}")


def _lend_qmp(dbg):
    """GDB's Python gets qemu.qmp from our own environment (to read instruction counts)."""
    import qemu.qmp
    site = Path(qemu.qmp.__file__).resolve().parents[2]
    dbg.console(f"python import sys; sys.path.append({str(site)!r})")


def _start_tracer(dbg, probes, qmp_socket, sample):
    """Path tracing inside GDB; qemu.qmp is lent from our own environment."""
    if not any(p.role == ENTRY for p in probes):
        return False
    if qmp_socket is not None:
        _lend_qmp(dbg)
    dbg.console(f"faultprobe trace {mi_quote(str(qmp_socket)) if qmp_socket else '-'} {int(sample)}")
    return True


def read_counts(dbg, run_dir):
    """The probe engine's JSON snapshot (through a file: no escaping, any size)."""
    path = Path(run_dir) / "counts.json"
    dbg.console(f"faultprobe json {path}")
    return json.loads(path.read_text())


def validate_spec(spec):
    """The cheap checks, before anything boots: one line, exit 2."""
    if spec.iterations is not None and not 1 <= spec.iterations <= MAX_ITERATIONS:
        raise GdbfaultError(f"--iterations must be between 1 and {MAX_ITERATIONS} (the guest counts in "
                            f"32 bits), not {spec.iterations}")
    if spec.cost_sample <= 0:
        raise GdbfaultError(f"--cost-sample must be positive, not {spec.cost_sample}")
    if not spec.timeout_s > 0:
        raise GdbfaultError(f"--timeout must be positive, not {spec.timeout_s:g}")
    if spec.kernel == "lab" and spec.system_map:
        # The lab kernel's ELF carries its own symbols; a map would be ignored.
        raise GdbfaultError("--system-map goes with a kernel you bring (--kernel PATH); the lab kernel "
                            "has its own ELF symbols", "drop --system-map")
    if spec.backend not in ("gdb", "plugin"):
        raise GdbfaultError(f"unknown backend '{spec.backend}'", "choose gdb or plugin")


def _end_label(exc):
    """Why gdbfault stopped a guest that was still running."""
    if isinstance(exc, Stopped):
        return exc.label.replace(" (Ctrl-C)", ", Ctrl-C")
    if isinstance(exc, TimedOut):
        return "--timeout"
    return "after an error"


def run_qemu(spec, progress=None):
    """Boot, count, and return the RunResult dict; raise RunFailed on failure.

    spec.timeout_s bounds the whole run (recording, replay and all).
    progress(done, total, hits) is called about once a second when given.
    """
    validate_spec(spec)
    deadline = time.monotonic() + spec.timeout_s
    kernel, system_map = spec.kernel_files()
    symbols = load_symbols(kernel, system_map)
    image = None if spec.kernel == "lab" else read_image(kernel)
    profile = load_profile(spec.profile) if spec.profile else \
        pick_profile(symbols, image.release if image else None)
    if spec.profile:
        profile.reason = "chosen with --profile"
    probes = resolve_probes(profile, symbols, spec.extra_probes)
    initrd = [workload_file(spec.workload)] if spec.workload else []
    arm = elf_entry(initrd[0]) if initrd else None
    live = None
    if spec.live_patch is not None:      # built (or refused) before anything boots
        from gdbfault.livepatch_run import prepare
        live = prepare(spec, kernel, system_map)
    boot = None
    cleanup = []                         # folders to remove at the end
    try:
        if spec.kernel != "lab":         # a kernel the user brings: root, boot path, cmdline
            from gdbfault.realkernel import prepare_boot
            boot = prepare_boot(kernel, symbols, initrd[0] if initrd else None, spec.command_line(),
                                spec.memory_mb)
            cleanup.append(boot.work_dir)
        result = _new_result(spec, kernel, symbols, profile, probes, boot)
        result["kernel"]["profile_reason"] = profile.reason
        result["kernel"]["profile_notes"] = list(profile.notes)
        if boot:
            result["kernel"]["model"] = truth_model(profile.name, boot.image)
            if spec.replay and spec.icount:
                result["mode"]["icount_shift"] = icount_shift(boot.rr_icount)
        for p in result["probes"]:
            p["alternatives"] = role_alternatives(p["role"], symbols, p["symbol"])
        config = machine_config(spec, kernel, initrd, boot, spec.backend)
    except BaseException:
        with shielded():
            for folder in cleanup:
                shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        if spec.backend == "plugin":
            from gdbfault.plugin_run import run_with_plugin
            return run_with_plugin(spec, result, config, probes, arm, deadline, live)
        return _run_gdb(spec, result, config, symbols, probes, arm, boot, cleanup, progress, deadline, live)
    except (GdbfaultError, KeyboardInterrupt) as exc:
        cause = exc
        if isinstance(exc, KeyboardInterrupt):
            stopped = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
            cause = GdbfaultError(str(stopped))
            cause.exit_code = stopped.exit_code
        run = result["run"]
        run["error"] = str(cause)
        if run.pop("stopped_by_gdbfault", False):     # what really happened to QEMU
            run["exit"] = f"stopped by gdbfault ({_end_label(exc)})" + (
                " while recording" if run.get("phase") == "record" else "")
        raise RunFailed(cause, result) from None
    finally:
        with shielded():
            for folder in cleanup:
                shutil.rmtree(folder, ignore_errors=True)


def _new_result(spec, kernel, symbols, profile, probes, boot):
    """The RunResult skeleton (schema in report.py), before anything is measured."""
    return {
        "schema": SCHEMA,
        "tool": {"gdbfault": __version__, "qemu": qemu_version(spec.qemu),
                 "gdb": gdb_version(spec.gdb) if spec.backend == "gdb" else None},
        "kernel": {"path": str(kernel), "lab": spec.kernel == "lab",
                   "variant": spec.variant if spec.kernel == "lab" else None,
                   "symbols": f"{symbols.kind} ({symbols.source})", "profile": profile.name,
                   "model": spec.kernel_model(profile.name),
                   "boot": boot.describe() if boot else None},
        "workload": {"name": spec.workload, "own": is_own_workload(spec.workload),
                     "iterations": spec.iterations,
                     "command_line": spec.command_line()},
        "mode": {"backend": spec.backend, "accel": "tcg", "icount": spec.icount,
                 "trace": spec.trace, "cost_sample": spec.cost_sample},
        "probes": [{"role": p.role, "symbol": p.symbol, "address": p.address,
                    "hits": {"boot": 0, "workload": 0}, "total": 0, "duplicates": 0} for p in probes],
        "guest": None, "checks": [],
        "run": {"complete": False, "error": None, "exit_status": None, "exit": None,
                "wall_s": None, "hits": 0, "hits_per_s": None},
    }


def _run_gdb(spec, result, config, symbols, probes, arm, boot, cleanup, progress, deadline, live=None):
    """The GDB backend: record the guest, then count in its replay under GDB."""
    kernel = config.kernel
    session = _Session()
    t_start = None
    replay = spec.replay and spec.icount
    result["mode"]["replay"] = replay
    # An old kernel's replay starts at the workload's entry, from a snapshot
    # the recording saves there; it ends where the recording was ended.
    from_entry = (replay and live is None and arm is not None and boot is not None
                  and boot.replay_from_entry)
    ready = None
    if live is not None:
        from gdbfault import livepatch_run
        plan = live[0].write_plan(_temp_dir(cleanup) / "livepatch-plan.json",
                                  unpatch=spec.live_patch.unpatch_at is not None)
        points = livepatch_run.WorkloadPoints(config.initrd[0])
    try:
        if replay and live is not None:    # the patch must be part of the recording too

            def attach_recorder(dbg, address):
                _prepare_debugger(dbg, kernel)
                _connect(dbg, address)
                _load_probe_engine(dbg, [], None)
                _lend_qmp(dbg)
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
                result["mode"]["replay_start"] = "workload entry (snapshot)" if from_entry else "power-on"
                # (a live patch's replay watchdog, and the check that a snapshot replay
                # starts, read the instruction count on a QMP socket of their own)
                run_config = replay_config(config, record_file, ENTRY_SNAPSHOT if from_entry else None,
                                           watch_qmp=live is not None or from_entry)
            result["run"]["phase"] = "replay" if replay else "live"
            session.machine = Machine(run_config)
            machine = session.machine
            machine.start(timeout=min(20.0, max(1.0, deadline - time.monotonic())))
            if ready is not None:
                dbg = session.debugger
                ready.wait(max(1.0, deadline - time.monotonic()))
                machine.wait_ready(min(60.0, max(1.0, deadline - time.monotonic())))   # snapshot loaded
                _connect(dbg, str(machine.gdb_socket))
                if not from_entry:       # no snapshot after all: the replay boots, count its boot apart
                    dbg.console(f"faultprobe arm *{arm:#x}")
            else:
                session.debugger = dbg = Debugger(spec.gdb)
                _prepare_debugger(dbg, kernel)
                _connect(dbg, str(machine.gdb_socket))
                _load_probe_engine(dbg, probes, arm, replay=replay)
            if spec.trace:
                _start_tracer(dbg, probes, machine.probe_qmp_socket if spec.icount else None,
                              spec.cost_sample)
            if live is not None:
                if replay:
                    session.watch = livepatch_run.ReplayWatch(machine, result)
                if spec.icount:
                    _lend_qmp(dbg)
                livepatch_run.arm(dbg, plan, points, machine.probe_qmp_socket if spec.icount else None)
                if spec.timeline and spec.trace and spec.icount:
                    dbg.console("faultprobe timeline")
            if boot and not entry_checked:   # stops once at the workload's entry: is the map right?
                from gdbfault.realkernel import check_banner
                banner = check_banner(dbg, symbols, boot.image, arm, max(1.0, deadline - time.monotonic()),
                                      machine)
                if banner:
                    result["kernel"]["banner"], result["kernel"]["banner_form"] = banner["text"], banner["form"]
            t_start = time.monotonic()
            starts_at = _replay_icount(machine) if from_entry else None
            dbg.mi("-exec-continue")
            if from_entry and not _replay_moves(machine, starts_at):
                # QEMU 7.2 sometimes cannot go on from a snapshot saved while
                # recording (seen about once in 20 runs: the replay stands at
                # the snapshot's instruction). Not one instruction ran, so
                # nothing was counted: replay the same recording from power-on.
                result["mode"]["snapshot_error"] = (f"the replay did not start from the snapshot (it stood "
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
        _fill(result, session, t_start, spec)
        result["run"]["exit_status"] = status
        result["run"]["exit"] = describe_exit(status)
        if machine.ended_after_result and status == EXIT_CLEAN:
            result["run"]["exit"] = ENDED_AFTER_RESULT + (" (the recording was ended there too)"
                                                          if recorded.get("ended_after_result") else "")
        machine.check_exit(status)
        if replay:
            _check_replay(result, recorded, machine)
        if live is not None:
            _fill_live_patch(result, session.snapshot, live, spec)
        if result["guest"] is None and not is_own_workload(spec.workload):
            raise GuestError("the workload printed no GDBFAULT-RESULT line "
                             f"(serial log: {machine.serial_log})")
        result["run"]["complete"] = True
        return result
    except (GdbfaultError, KeyboardInterrupt) as exc:
        with shielded():
            _salvage(result, session, t_start, spec)
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
    if machine is None or machine.proc is None or result["run"].get("complete"):
        return
    result["run"]["exit_status"] = machine.poll()
    result["run"]["exit"] = describe_exit(machine.poll())
    result["run"]["stopped_by_gdbfault"] = machine.stopped_by_us




def _temp_dir(cleanup):
    folder = private_dir("gdbfault-run-")
    cleanup.append(folder)
    return folder


def _fill_live_patch(result, snap, live, spec):
    """Before/after the patch, its checks, and the proof the replay ran what was recorded."""
    from gdbfault import livepatch_run
    patch, at = live
    guest = result["guest"] or {}
    livepatch_run.fill_live_patch(result, snap, patch, at, int(guest.get("iterations") or spec.iterations),
                                  spec.live_patch.unpatch_at)
    livepatch_run.check_consistency(result, snap)
    result["checks"] = livepatch_run.live_patch_checks(result, patch, guest)
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
    result["run"]["phase"] = "record"
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
            result["record"] = {"exit_status": rec.poll(), "exit": describe_exit(rec.poll()),
                                "wall_s": round(time.monotonic() - t0, 3)}
            if rec.ended_after_result:
                result["record"]["exit"] = ENDED_AFTER_RESULT
            elif rec.stopped_by_us:
                result["record"]["exit"] = "stopped by gdbfault"
                result["run"]["stopped_by_gdbfault"] = True
                result["run"]["exit_status"] = rec.poll()
            elif status is not None and status != EXIT_CLEAN:
                result["run"]["exit_status"] = status
                result["run"]["exit"] = describe_exit(status) + " while recording"
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
    path costs are exact and the same from run to run.
    """
    from gdbfault.realkernel import read_banner, stop_at_entry
    try:
        _prepare_debugger(dbg, kernel)
        _connect(dbg, str(rec.gdb_socket))
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
            result["kernel"]["banner"], result["kernel"]["banner_form"] = banner["text"], banner["form"]
        said = dbg.console(f"monitor savevm {ENTRY_SNAPSHOT}", timeout=120)
        saved = "error" not in said.lower()
        if not saved:                    # the replay then boots from power-on
            result["mode"]["snapshot_error"] = said.strip()[:200]
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


def _replay_icount(machine):
    """The replay's instruction count, on the machine's own QMP socket (MachineConfig.watch_qmp)."""
    from qemu.qmp.legacy import QEMUMonitorProtocol
    client = QEMUMonitorProtocol(str(machine.watch_qmp_socket))
    try:
        client.connect()
        return int(client.cmd("query-replay")["icount"])
    finally:
        client.close()


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
            if _replay_icount(machine) != start:
                return True
        except (OSError, EOFError, QMPError):
            return True                  # QMP gone: QEMU's own end is reported instead
        time.sleep(0.05)
    return False


def _ready_replay_debugger(dbg, kernel, probes):
    """The replay's GDB, before its QEMU exists: settings and probes (no target needed)."""
    _prepare_debugger(dbg, kernel)
    _load_probe_engine(dbg, probes, None, replay=True)


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
    result["record"]["guest"] = original
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


def _fill(result, session, t_start, spec, open_label=None):
    """Copy counts, the guest's summary and timings into the result.

    open_label names paths still open at the end (default: never returned)."""
    snap = session.snapshot
    if snap:
        by_addr = {p["address"]: p for p in snap["probes"]}
        for p in result["probes"]:
            got = by_addr.get(p["address"])
            if got:
                p["hits"], p["total"], p["duplicates"] = got["hits"], got["total"], got["duplicates"]
    if snap:
        result["run"]["duplicate_filter"] = snap.get("dedup", True)
    if snap and snap.get("trace"):
        trace = snap["trace"]
        result["paths"] = summarise_paths(trace, open_label=open_label)
        result["user_fault_searches"] = user_fault_searches(result["paths"])
        result["trace"] = {"entries": trace["entries"], "lost": trace["lost"],
                           "sample": trace["sample"], "costed": trace["icount"],
                           "return_sites": trace["return_sites"],
                           "iteration": cost_stats(trace.get("iteration_costs", []))}
    machine = session.machine
    guest = parse_guest_output(machine.serial_output()) if machine else {"result": None}
    result["guest"] = guest["result"]
    iterations = (guest["result"] or {}).get("iterations") or spec.iterations
    for p in result["probes"]:
        p["per_iteration"] = round(p["hits"]["workload"] / iterations, 4) if iterations else None
    result["checks"] = compare_with_guest(result["probes"], result["guest"], result["kernel"]["model"])
    hits = sum(p["total"] for p in result["probes"])
    wall = time.monotonic() - t_start if t_start else None
    result["run"].update({"wall_s": round(wall, 3) if wall else None, "hits": hits,
                          "duplicates": sum(p["duplicates"] for p in result["probes"]),
                          "hits_per_s": round(hits / wall, 1) if wall else None})


def open_path_label(status):
    """How to name a fault path still open when the run ended with QEMU `status`."""
    if status in (EXIT_OOPS, EXIT_PANIC):
        return None                      # the default: never returned (oops?)
    if status is None:                   # QEMU still running: gdbfault is stopping it
        return "cut off by the stop"
    return f"cut off ({describe_exit(status)})"


def _salvage(result, session, t_start, spec):
    """Best effort: the freshest counts we can still get, after a failure."""
    dbg, machine = session.debugger, session.machine
    if dbg is not None and dbg.alive and machine is not None:
        try:
            session.snapshot = read_counts(dbg, machine.run_dir)
        except BaseException:
            pass
    try:
        _fill(result, session, t_start, spec,
              open_label=open_path_label(machine.poll() if machine is not None else None))
    except Exception:
        pass
    if machine is not None:
        result["run"]["exit_status"] = machine.poll()
        result["run"]["exit"] = describe_exit(machine.poll())
