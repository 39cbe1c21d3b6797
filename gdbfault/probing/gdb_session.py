"""The GDB side of a run: set up GDB (its architecture follows the emulator), load the in-GDB probe engine,
read its counts.

Every user of gdbscripts/faultprobe.py goes through here: the GDB backend
(backends/gdb_backend.py and its recording), the plugin backend's GDB for a feature that
writes guest memory, and attach-to-running (backends/running_qemu.py). `measured(snapshot)`
turns the engine's JSON snapshot into the backend-neutral `measure.Measured`.
"""
import json
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.machine.gdbmi import mi_quote
from gdbfault.base.locations import GDBSCRIPTS
from gdbfault.probing.measure import Measured, ProbeCount
from gdbfault.model.paths import cost_stats
from gdbfault.model.roles import ENTRY
from gdbfault.model.result import CostStats, Trace
from gdbfault.kernels.symbols import is_elf

__all__ = ["prepare_debugger", "connect", "load_probe_engine", "start_tracer", "read_counts",
           "measured", "GDB_ARCHITECTURES"]


# GDB's architecture for each QEMU target: the width of the registers its gdbstub
# sends. `set architecture i386` on qemu-system-x86_64 breaks the connection ("Remote
# 'g' packet reply is too long"), also while the guest runs an i386 kernel.
GDB_ARCHITECTURES = {"i386": "i386", "x86_64": "i386:x86-64"}


def prepare_debugger(dbg, kernel, arch=None):
    """GDB settings for a scripted session on the run's emulator (`arch`, a kernels.arch.RunArch;
    None: qemu-system-i386), and the kernel's symbols when it is an ELF."""
    for cmd in ("-gdb-set mi-async on", "-gdb-set pagination off", "-gdb-set confirm off",
                "-gdb-set breakpoint pending off"):
        dbg.mi(cmd)
    dbg.console(f"set architecture {GDB_ARCHITECTURES.get(arch.target if arch else 'i386', 'auto')}")
    if is_elf(kernel):
        # Names in backtraces for people who look; probes go by address anyway.
        dbg.mi(f"-file-exec-and-symbols {mi_quote(str(kernel))}", timeout=120)


def connect(dbg, address):
    """target remote ADDRESS (a unix socket path or host:port)."""
    if any(c.isspace() for c in address):
        # GDB's `target remote` takes the rest of the line literally, quotes included.
        raise GdbfaultError(f"gdbstub address has white space, which GDB cannot take: {address!r}")
    dbg.mi(f"-target-select remote {address}", timeout=30)


def load_probe_engine(dbg, probes, arm_address, replay=False, arch=None):
    """Source faultprobe.py and add the probes (armed at `arm_address` when given); `arch`
    (kernels.arch.RunArch) tells it the kernel's word size (default: GDB's pointer size)."""
    dbg.console(f"source {GDBSCRIPTS / 'faultprobe.py'}")
    dbg.console("help faultprobe")     # fails loudly if the script did not load
    if arch is not None:
        dbg.console(f"faultprobe wordsize {arch.word_size}")
    if replay:
        # Only a live guest gets duplicate stop reports: a replay saves the
        # filter's nine register reads per stop (counts are checked anyway).
        dbg.console("faultprobe dedup off")
    for p in probes:
        dbg.console(f"faultprobe add {mi_quote(p.role)} *{p.address:#x} {p.symbol}")
    if arm_address is not None:
        dbg.console(f"faultprobe arm *{arm_address:#x}")


def start_tracer(dbg, probes, qmp_socket, sample):
    """Path tracing inside GDB (needs a fault-entry probe); False when there is none."""
    if not any(p.role == ENTRY for p in probes):
        return False
    dbg.console(f"faultprobe trace {mi_quote(str(qmp_socket)) if qmp_socket else '-'} {int(sample)}")
    return True


def read_counts(dbg, run_dir):
    """The probe engine's JSON snapshot (through a file: no escaping, any size)."""
    path = Path(run_dir) / "counts.json"
    dbg.console(f"faultprobe json {path}")
    return json.loads(path.read_text())


def measured(snapshot, serial=None, wall_s=None):
    """What the probe engine's snapshot says, as a backend-neutral Measured.

    serial: the guest's serial output (None: no guest output to read).
    """
    snap = snapshot or {}
    counts = {p["address"]: ProbeCount(p["hits"]["boot"], p["hits"]["workload"], p["duplicates"])
              for p in snap.get("probes", [])}
    trace = snap.get("trace")
    return Measured(
        counts=counts, serial=serial, wall_s=wall_s,
        duplicate_filter=snap.get("dedup", True) if snapshot else None,
        paths=trace,
        trace=Trace(entries=trace["entries"], lost=trace["lost"], sample=trace["sample"],
                    costed=trace["icount"], return_sites=trace["return_sites"],
                    iteration=CostStats.from_dict(cost_stats(trace.get("iteration_costs", []))))
        if trace else None)
