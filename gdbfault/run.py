"""One measured run: boot a kernel under QEMU, count its fault path, report.

`run_qemu(spec)` is `gdbfault attach --qemu`: it starts a halted QEMU, has
GDB arm the probes (counted inside GDB by gdbscripts/faultprobe.py), lets the
guest run its workload to the end, and returns a RunResult dict (the JSON
schema in report.py). Whatever happens — a guest that oopses or hangs, QEMU
or GDB killed, Ctrl-C — the counts measured so far are kept in the result
attached to the raised error, and no QEMU or GDB process is left behind.
"""
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault import __version__
from gdbfault.errors import GdbfaultError, GuestError
from gdbfault.gdb import Debugger, gdb_version, mi_quote
from gdbfault.locations import GDBSCRIPTS, lab_kernel, workload_binary
from gdbfault.paths import cost_stats, summarise_paths, user_fault_searches
from gdbfault.profiles import ENTRY, load_profile, pick_profile, resolve_probes
from gdbfault.realkernel import apply_boot
from gdbfault.qemu import EXIT_CLEAN, Machine, MachineConfig, describe_exit, qemu_version
from gdbfault.symbols import is_elf, load_symbols
from gdbfault.truth import compare_with_guest, parse_guest_output

__all__ = ["RunSpec", "RunFailed", "run_qemu", "read_counts", "elf_entry", "SCHEMA"]

SCHEMA = "gdbfault.run/1"
SNAPSHOT_EVERY_S = 1.0


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
        if self.append:
            words.append(self.append)
        return " ".join(words)


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

    def close(self, keep_dir=False):
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


def _start_tracer(dbg, probes, qmp_socket, sample):
    """Path tracing inside GDB; qemu.qmp is lent from our own environment."""
    if not any(p.role == ENTRY for p in probes):
        return False
    if qmp_socket is not None:
        import qemu.qmp
        site = Path(qemu.qmp.__file__).resolve().parents[2]
        dbg.console(f"python import sys; sys.path.append({str(site)!r})")
    dbg.console(f"faultprobe trace {mi_quote(str(qmp_socket)) if qmp_socket else '-'} {int(sample)}")
    return True


def read_counts(dbg, run_dir):
    """The probe engine's JSON snapshot (through a file: no escaping, any size)."""
    path = Path(run_dir) / "counts.json"
    dbg.console(f"faultprobe json {path}")
    return json.loads(path.read_text())


def run_qemu(spec, progress=None):
    """Boot, count, and return the RunResult dict; raise RunFailed on failure.

    progress(done, total, hits) is called about once a second when given.
    """
    kernel, system_map = spec.kernel_files()
    symbols = load_symbols(kernel, system_map)
    profile = load_profile(spec.profile) if spec.profile else pick_profile(symbols)
    probes = resolve_probes(profile, symbols, spec.extra_probes)
    initrd = [workload_binary(spec.workload)] if spec.workload else []
    arm = elf_entry(initrd[0]) if initrd else None
    if spec.backend not in ("gdb", "plugin"):
        raise GdbfaultError(f"unknown backend '{spec.backend}'", "choose gdb or plugin")
    boot = None
    if spec.kernel != "lab":             # a kernel the user brings: root, boot path, cmdline
        from gdbfault.realkernel import prepare_boot
        boot = prepare_boot(kernel, symbols, initrd[0] if initrd else None, spec.command_line(),
                            spec.memory_mb)
    result = _new_result(spec, kernel, symbols, profile, probes, boot)
    config = MachineConfig(kernel=kernel, initrd=initrd, append=spec.command_line(),
                           icount=spec.icount, memory_mb=spec.memory_mb, qemu=spec.qemu)
    apply_boot(config, boot)
    cleanup = [boot.work_dir] if boot else []    # folders to remove at the end
    try:
        if spec.backend == "plugin":
            from gdbfault.plugin_run import run_with_plugin
            return run_with_plugin(spec, result, config, probes, arm)
        return _run_gdb(spec, result, config, symbols, probes, arm, boot, cleanup, progress)
    except (GdbfaultError, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            exc = GdbfaultError("interrupted (Ctrl-C)")
            exc.exit_code = 130
        result["run"]["error"] = str(exc)
        raise RunFailed(exc, result) from None
    finally:
        import shutil
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
        "workload": {"name": spec.workload, "iterations": spec.iterations,
                     "command_line": spec.command_line()},
        "mode": {"backend": spec.backend, "accel": "tcg", "icount": spec.icount,
                 "trace": spec.trace, "cost_sample": spec.cost_sample},
        "probes": [{"role": p.role, "symbol": p.symbol, "address": p.address,
                    "hits": {"boot": 0, "workload": 0}, "total": 0, "duplicates": 0} for p in probes],
        "guest": None, "checks": [],
        "run": {"complete": False, "error": None, "exit_status": None, "exit": None,
                "wall_s": None, "hits": 0, "hits_per_s": None},
    }


def _run_gdb(spec, result, config, symbols, probes, arm, boot, cleanup, progress):
    """The GDB backend: record the guest, then count in its replay under GDB."""
    kernel = config.kernel
    session = _Session()
    t_start = None
    replay = spec.replay and spec.icount
    result["mode"]["replay"] = replay
    try:
        if replay:
            record_file, recorded = _record(spec, config, result, cleanup)
            config = dataclasses.replace(
                config, icount_options=f"{config.rr_icount},rr=replay,rrfile={record_file}",
                extra_args=config.extra_args + ["-net", "none"])
        session.machine = Machine(config)
        machine = session.machine
        machine.start()
        session.debugger = dbg = Debugger(spec.gdb)
        _prepare_debugger(dbg, kernel)
        _connect(dbg, str(machine.gdb_socket))
        _load_probe_engine(dbg, probes, arm, replay=replay)
        if spec.trace:
            _start_tracer(dbg, probes, machine.probe_qmp_socket if spec.icount else None,
                          spec.cost_sample)
        if boot:                         # stops once at the workload's entry: is the map right?
            from gdbfault.realkernel import check_banner
            result["kernel"]["banner"] = check_banner(dbg, symbols, boot.image, arm, spec.timeout_s)
        t_start = time.monotonic()
        dbg.mi("-exec-continue")
        status = _supervise(spec, session, t_start, progress)
        if dbg.alive:                    # else: keep the last snapshot
            try:
                session.snapshot = read_counts(dbg, machine.run_dir)
            except GdbfaultError:
                if status == EXIT_CLEAN:  # a QEMU that died can take GDB along: report QEMU
                    raise
        _fill(result, session, t_start, spec)
        result["run"]["exit_status"] = status
        result["run"]["exit"] = describe_exit(status)
        machine.check_exit(status)
        if replay:
            _check_replay(result, recorded, machine)
        if result["guest"] is None:
            raise GuestError("the workload printed no GDBFAULT-RESULT line "
                             f"(serial log: {machine.serial_log})")
        result["run"]["complete"] = True
        return result
    except (GdbfaultError, KeyboardInterrupt):
        _salvage(result, session, t_start, spec)
        raise
    finally:
        session.close(keep_dir=spec.keep_run_dir)


def _record(spec, config, result, cleanup):
    """Run the guest once with no debugger attached, recording it for replay.

    Breakpoint stops move virtual time under -icount (while QEMU is stopped
    its clock follows real time), so a guest watched live would see timer
    interrupts at other places and other rdtsc values. A replay re-injects
    every interrupt at its recorded instruction count: under GDB it executes
    exactly the instructions the unobserved run did.
    """
    import tempfile
    rec_dir = Path(tempfile.mkdtemp(prefix="gdbfault-rec-"))
    record_file = rec_dir / "guest.rr"
    rec = Machine(dataclasses.replace(
        config, icount=True, halted=False,
        icount_options=f"{config.rr_icount},rr=record,rrfile={record_file}",
        extra_args=config.extra_args + ["-net", "none"]), run_dir=rec_dir)
    t0 = time.monotonic()
    try:
        rec.start()
        status = rec.wait(spec.timeout_s)
        if status is None:
            raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s (hung?) while "
                             f"recording; serial log tail: {_tail(rec.serial_output())!r}")
        serial = rec.serial_output()
    finally:
        rec.close(keep_dir=True)     # the record file lives there until the replay is done
        cleanup.append(rec_dir)
    result["record"] = {"exit_status": status, "exit": describe_exit(status),
                        "wall_s": round(time.monotonic() - t0, 3)}
    return record_file, {"status": status, "serial": serial}


def _check_replay(result, recorded, machine):
    """The replay must have printed what the recording printed."""
    replayed = parse_guest_output(machine.serial_output())["result"]
    original = parse_guest_output(recorded["serial"])["result"]
    result["record"]["guest"] = original
    if original != replayed:
        raise GdbfaultError("the replay diverged from the recording (the guest's summaries differ)")


def _supervise(spec, session, t_start, progress):
    """Wait for QEMU to end the run; snapshot counts as it goes.

    When GDB goes away, QEMU is given a moment: a QEMU killed under GDB can
    take GDB down with it, and then QEMU's end is the cause to report.
    """
    machine, dbg = session.machine, session.debugger
    deadline = t_start + spec.timeout_s
    next_snap = time.monotonic() + SNAPSHOT_EVERY_S
    while True:
        status = machine.wait(0.2)
        if status is not None:
            return status
        if not dbg.alive:
            return _gdb_gone(machine, dbg)
        now = time.monotonic()
        if now >= deadline:
            raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s (hung?); "
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


def _fill(result, session, t_start, spec):
    """Copy counts, the guest's summary and timings into the result."""
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
        result["paths"] = summarise_paths(trace)
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


def _salvage(result, session, t_start, spec):
    """Best effort: the freshest counts we can still get, after a failure."""
    dbg, machine = session.debugger, session.machine
    if dbg is not None and dbg.alive and machine is not None:
        try:
            session.snapshot = read_counts(dbg, machine.run_dir)
        except Exception:
            pass
    try:
        _fill(result, session, t_start, spec)
    except Exception:
        pass
    if machine is not None:
        result["run"]["exit_status"] = machine.poll()
        result["run"]["exit"] = describe_exit(machine.poll())
