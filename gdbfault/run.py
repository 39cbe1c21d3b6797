"""One measured run: boot a kernel under QEMU, count its fault path, report.

`run_qemu(spec)` is `gdbfault attach --qemu`: it starts a halted QEMU, has
GDB arm the probes (counted inside GDB by gdbscripts/faultprobe.py), lets the
guest run its workload to the end, and returns a RunResult dict (the JSON
schema in report.py). Whatever happens — a guest that oopses or hangs, QEMU
or GDB killed, Ctrl-C — the counts measured so far are kept in the result
attached to the raised error, and no QEMU or GDB process is left behind.
"""
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault import __version__
from gdbfault.errors import GdbfaultError, GuestError
from gdbfault.gdb import Debugger, gdb_version, mi_quote
from gdbfault.locations import GDBSCRIPTS, lab_kernel, workload_binary
from gdbfault.profiles import load_profile, pick_profile, resolve_probes
from gdbfault.qemu import EXIT_CLEAN, Machine, MachineConfig, describe_exit, qemu_version
from gdbfault.symbols import is_elf, load_symbols
from gdbfault.truth import compare_with_guest, parse_guest_output

__all__ = ["RunSpec", "RunFailed", "run_qemu", "elf_entry", "SCHEMA"]

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

    def kernel_files(self):
        if self.kernel == "lab":
            return lab_kernel(self.variant)
        kernel = Path(self.kernel)
        if not kernel.is_file():
            raise GdbfaultError(f"kernel file not found: {kernel}")
        return kernel, Path(self.system_map) if self.system_map else None

    @property
    def kernel_model(self):
        """Which ground-truth rules apply (truth.expected_hits)."""
        return f"lab-{self.variant}" if self.kernel == "lab" else "generic"

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


def _prepare_debugger(dbg, kernel, probes, arm_address):
    for cmd in ("-gdb-set mi-async on", "-gdb-set pagination off", "-gdb-set confirm off",
                "-gdb-set breakpoint pending off"):
        dbg.mi(cmd)
    dbg.console("set architecture i386")
    if is_elf(kernel):
        # Names in backtraces for people who look; probes go by address anyway.
        dbg.mi(f"-file-exec-and-symbols {mi_quote(str(kernel))}", timeout=120)


def _load_probe_engine(dbg, probes, arm_address):
    dbg.console(f"source {GDBSCRIPTS / 'faultprobe.py'}")
    dbg.console("help faultprobe")     # fails loudly if the script did not load
    for p in probes:
        dbg.console(f"faultprobe add {mi_arg(p.role)} *{p.address:#x} {p.symbol}")
    if arm_address is not None:
        dbg.console(f"faultprobe arm *{arm_address:#x}")


def mi_arg(text):
    """Quote one argument for gdb.string_to_argv."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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

    result = {
        "schema": SCHEMA,
        "tool": {"gdbfault": __version__, "qemu": qemu_version(spec.qemu), "gdb": gdb_version(spec.gdb)},
        "kernel": {"path": str(kernel), "lab": spec.kernel == "lab",
                   "variant": spec.variant if spec.kernel == "lab" else None,
                   "symbols": f"{symbols.kind} ({symbols.source})", "profile": profile.name,
                   "model": spec.kernel_model},
        "workload": {"name": spec.workload, "iterations": spec.iterations,
                     "command_line": spec.command_line()},
        "mode": {"backend": "gdb", "accel": "tcg", "icount": spec.icount},
        "probes": [{"role": p.role, "symbol": p.symbol, "address": p.address,
                    "hits": {"boot": 0, "workload": 0}, "total": 0, "duplicates": 0} for p in probes],
        "guest": None, "checks": [],
        "run": {"complete": False, "error": None, "exit_status": None, "exit": None,
                "wall_s": None, "hits": 0, "hits_per_s": None},
    }
    session = _Session()
    t_start = None
    try:
        session.machine = Machine(MachineConfig(kernel=kernel, initrd=initrd,
                                                append=spec.command_line(), icount=spec.icount,
                                                memory_mb=spec.memory_mb, qemu=spec.qemu))
        machine = session.machine
        machine.start()
        session.debugger = dbg = Debugger(spec.gdb)
        _prepare_debugger(dbg, kernel, probes, arm)
        dbg.mi(f"-target-select remote {mi_quote(str(machine.gdb_socket))}", timeout=30)
        _load_probe_engine(dbg, probes, arm)
        t_start = time.monotonic()
        dbg.mi("-exec-continue")
        status = _supervise(spec, session, t_start, progress)
        session.snapshot = read_counts(dbg, machine.run_dir)
        _fill(result, session, t_start, spec)
        result["run"]["exit_status"] = status
        result["run"]["exit"] = describe_exit(status)
        machine.check_exit(status)
        if result["guest"] is None:
            raise GuestError("the workload printed no GDBFAULT-RESULT line "
                             f"(serial log: {machine.serial_log})")
        result["run"]["complete"] = True
        return result
    except (GdbfaultError, KeyboardInterrupt) as exc:
        _salvage(result, session, t_start, spec)
        if isinstance(exc, KeyboardInterrupt):
            exc = GdbfaultError("interrupted (Ctrl-C)")
            exc.exit_code = 130
        result["run"]["error"] = str(exc)
        raise RunFailed(exc, result) from None
    finally:
        session.close(keep_dir=spec.keep_run_dir)


def _supervise(spec, session, t_start, progress):
    """Wait for QEMU to end the run; snapshot counts as it goes."""
    machine, dbg = session.machine, session.debugger
    deadline = t_start + spec.timeout_s
    next_snap = time.monotonic() + SNAPSHOT_EVERY_S
    while True:
        status = machine.wait(0.2)
        if status is not None:
            return status
        if not dbg.alive:
            raise GdbfaultError(f"GDB died during the run; last message: {dbg.last_log() or 'none'}")
        now = time.monotonic()
        if now >= deadline:
            raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s (hung?); "
                             f"serial log tail: {_tail(machine.serial_output())!r}")
        if now >= next_snap:
            next_snap = now + SNAPSHOT_EVERY_S
            try:
                session.snapshot = read_counts(dbg, machine.run_dir)
            except GdbfaultError:
                if machine.poll() is not None:
                    return machine.poll()
                raise
            if progress is not None:
                guest = parse_guest_output(machine.serial_output())
                done, total = guest["progress"] or (0, spec.iterations or 0)
                progress(done, total, session.snapshot["total_hits"])


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
    machine = session.machine
    guest = parse_guest_output(machine.serial_output()) if machine else {"result": None}
    result["guest"] = guest["result"]
    iterations = (guest["result"] or {}).get("iterations") or spec.iterations
    for p in result["probes"]:
        p["per_iteration"] = round(p["hits"]["workload"] / iterations, 4) if iterations else None
    result["checks"] = compare_with_guest(result["probes"], result["guest"], spec.kernel_model)
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
