"""From what a backend measured to the RunResult: the one builder every backend uses.

A backend (the GDB probe engine, the TCG plugin, attach-to-running) hands over
a `Measured`: raw per-probe counts keyed by probe address, the traced paths,
the guest's serial output and the wall time. `fill_result` turns it into the
RunResult's probe hits, paths, guest summary, checks against the guest's truth
and run totals, the same way for all of them.
"""
from dataclasses import dataclass, field
from typing import NamedTuple

from gdbfault.base.lifecycle import Stopped
from gdbfault.base.errors import TimedOut
from gdbfault.model.paths import summarise_paths, user_fault_searches
from gdbfault.machine.qemu import EXIT_OOPS, EXIT_PANIC, describe_exit
from gdbfault.model.result import Hits, Probe, Trace
from gdbfault.model.truth import compare_with_guest, parse_guest_output

__all__ = ["ProbeCount", "Measured", "fill_result", "probe_rows", "open_path_label", "end_label"]


class ProbeCount(NamedTuple):
    """One probe's raw counts."""
    boot: int
    workload: int
    duplicates: int = 0


@dataclass
class Measured:
    """What a backend measured, before it is a RunResult."""
    counts: dict = field(default_factory=dict)   # probe address -> ProbeCount; a probe not in it keeps its counts
    # {"paths": [{phase, events (roles), costs | cost_hist, count?}], "open": [...]}
    # (paths.summarise_paths); None when the run traced no paths
    paths: dict = None
    trace: Trace = None           # the tracer's own figures; entries None = the paths' count
    serial: str = None            # the guest's serial output; None when there is none to read
    wall_s: float = None          # the counting window; None when counting never started
    duplicate_filter: bool = None  # whether duplicate stop reports were filtered (GDB); None: not said
    insns_total: int = None       # guest instructions executed (plugin)


def probe_rows(probes):
    """The RunResult's probe rows for resolved probes (profiles.Probe), before anything is counted."""
    return [Probe(p.role, p.symbol, p.address) for p in probes]


def fill_result(result, measured, open_label=None, partial=False):
    """Fill RunResult `result` from `measured` (see the module docstring).

    open_label names paths still open at the end (default: never returned).
    partial: the run ended early — unless the guest said how many iterations it ran, there is
    nothing to divide by (the planned count is not what ran), so no per-iteration figures.
    """
    for p in result.probes:
        got = measured.counts.get(p.address)
        if got is not None:
            p.hits = Hits(got.boot, got.workload)
            p.total = got.boot + got.workload
            p.duplicates = got.duplicates
    if measured.duplicate_filter is not None:
        result.run.duplicate_filter = measured.duplicate_filter
    if measured.paths is not None:
        rows = summarise_paths(measured.paths, open_label=open_label)
        result.paths = rows
        result.user_fault_searches = user_fault_searches(rows)
        trace = measured.trace or Trace()
        if trace.entries is None:
            trace.entries = sum(r.count for r in result.paths)
        result.trace = trace
    result.guest = parse_guest_output(measured.serial)["result"] if measured.serial is not None else None
    iterations = result.iterations
    if partial and not (result.guest or {}).get("iterations"):
        iterations = None
    for p in result.probes:
        p.per_iteration = round(p.hits.workload / iterations, 4) if iterations else None
    result.checks = compare_with_guest(result.probes, result.guest, result.kernel.model)
    hits = result.total_hits
    wall = measured.wall_s
    run = result.run
    run.wall_s = round(wall, 3) if wall else None
    run.hits = hits
    run.duplicates = sum(p.duplicates for p in result.probes)
    run.hits_per_s = round(hits / wall, 1) if wall else None
    if measured.insns_total is not None:
        run.insns_total = measured.insns_total
    return result


def open_path_label(status):
    """How to name a fault path still open when the run ended with QEMU `status`."""
    if status in (EXIT_OOPS, EXIT_PANIC):
        return None                      # the default: never returned (oops?)
    if status is None:                   # QEMU still running: gdbfault is stopping it
        return "cut off by the stop"
    return f"cut off ({describe_exit(status)})"


def end_label(exc):
    """Why gdbfault stopped a guest that was still running."""
    if isinstance(exc, Stopped):
        return exc.label.replace(" (Ctrl-C)", ", Ctrl-C")
    if isinstance(exc, TimedOut):
        return "--timeout"
    return "after an error"
