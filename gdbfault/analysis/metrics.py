"""Named numbers of a RunResult: metric references ("RUN.PATH") and their values.

`gdbfault check` parses a reference with `parse_ref` and reads it with
`resolve`; `gdbfault compare` builds its rows from the same readers (`value`,
`find_probe`, `user_signal_path`, `guest_seconds`), so a metric is computed
one way wherever it is shown. Every reader takes a RunResult or a run's JSON
dict (result.as_result) and reads typed fields.
"""
import math

from gdbfault.model.paths import USER_SIGNAL_SHAPES, user_fault_searches
from gdbfault.model.roles import SIGNAL
from gdbfault.model.result import Hits, Probe, RunResult, as_result

__all__ = ["phase_view", "MetricError", "parse_ref", "resolve", "value", "find_probe", "path_row", "user_signal_path",
           "guest_seconds", "is_number", "PROBE_CATEGORIES", "STATS", "SCALARS", "PHASES"]

PHASES = ("before", "after")          # of a live-patched run (live_patch = FILE)
PROBE_CATEGORIES = ("hits", "boot_hits", "per_iteration")
STATS = ("count", "min", "median", "p95", "max")
SCALARS = ("user_fault_searches", "cycles_per_iteration", "iterations")


class MetricError(Exception):
    """A reference that cannot be read from this run (an error, not a failure)."""


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_ref(ref, runs):
    """'RUN.PATH' -> (run, category, args); ValueError with a readable reason."""
    run, dot, rest = ref.partition(".")
    if run not in runs:
        known = ", ".join(runs) or "none"
        raise ValueError(f"{ref!r} refers to unknown run '{run}' (runs: {known})")
    if not dot or not rest:
        raise ValueError(f"{ref!r} names no metric after the run (e.g. '{run}.hits.force_sig')")
    cat, _, arg = rest.partition(".")
    if cat in PHASES:
        if not arg:
            raise ValueError(f"{ref!r}: '{cat}' needs a metric after it (e.g. '{run}.{cat}.per_iteration."
                             "search_exception_table')")
        _run, inner, inner_args = parse_ref(f"{run}.{arg}", runs)
        if inner in ("guest", "cycles_per_iteration", "boot_hits", "iteration"):
            raise ValueError(f"{ref!r}: '{inner}' is a whole-run metric; '{cat}.' takes hits, per_iteration, "
                             "path, user_fault_searches or iterations")
        return (run, "phase", (cat, inner, inner_args))
    if cat in SCALARS:
        if arg:
            raise ValueError(f"{ref!r}: '{cat}' takes nothing after it")
        return (run, cat, ())
    if cat in PROBE_CATEGORIES or cat == "guest":
        if not arg:
            raise ValueError(f"{ref!r}: '{cat}' needs a {'key' if cat == 'guest' else 'role or symbol'} "
                             f"after it (e.g. '{run}.{cat}.{'sigsegv' if cat == 'guest' else 'force_sig'}')")
        return (run, cat, (arg,))
    if cat == "path":
        shape, _, stat = arg.rpartition(".")
        if not shape or stat not in STATS:
            raise ValueError(f"{ref!r}: a path metric is '{run}.path.SHAPE.STAT' with STAT one of "
                             f"{', '.join(STATS)}")
        return (run, cat, (shape, stat))
    if cat == "iteration":
        if arg not in STATS[1:]:
            raise ValueError(f"{ref!r}: an iteration metric is '{run}.iteration.STAT' with STAT one of "
                             f"{', '.join(STATS[1:])}")
        return (run, cat, (arg,))
    raise ValueError(f"{ref!r}: unknown metric '{cat}' — choose one of "
                     f"{', '.join(PROBE_CATEGORIES + ('guest', 'path', 'iteration') + SCALARS)}")


def find_probe(result, name):
    """The probe whose role is `name`, else whose symbol is; None when there is none."""
    return as_result(result).find_probe(name)


def user_signal_path(result):
    """The path row of a run's user faults that got SIGSEGV (None when untraced).

    A known user-signal shape when the run has one; else the most frequent
    path with a signal event (a kernel we do not know, or a broken build).
    """
    paths = as_result(result).paths or []
    for p in paths:
        if p.shape in USER_SIGNAL_SHAPES:
            return p
    signalled = [p for p in paths if SIGNAL in p.events and not p.shape.startswith(("never", "cut off"))]
    return max(signalled, key=lambda p: p.count) if signalled else None


def path_row(result, shape):
    """The path row of SHAPE (`user-signal`: user_signal_path); None when the run has none."""
    if shape == "user-signal":
        return user_signal_path(result)
    return as_result(result).path(shape)


def guest_seconds(result, key):
    """real_ticks, user_ticks or sys_ticks of the guest's summary in seconds (2 decimals); None if absent."""
    guest = as_result(result).guest or {}
    if guest.get(key) is None or not guest.get("ticks_per_s"):
        return None
    return round(guest[key] / guest["ticks_per_s"], 2)


def phase_view(run, phase):
    """A RunResult of one phase of a live-patched run (its hits, per-iteration figures and
    paths between the patch moments), or None when the run has no such phase."""
    lp = run.live_patch
    if lp is None or not lp.has(phase):
        return None
    part = getattr(lp, phase)
    probes = [Probe(role=p.role, symbol=p.symbol, address=p.address,
                    hits=Hits(boot=0, workload=part.hits.get(p.symbol, 0)),
                    per_iteration=part.per_iteration.get(p.symbol)) for p in run.probes]
    return RunResult(tool=run.tool, kernel=run.kernel, workload=run.workload, mode=run.mode, probes=probes,
                     guest={"iterations": part.iterations}, paths=part.paths if part.has("paths") else None)


def resolve(result, category, args=()):
    """The value of a metric on a RunResult (or its JSON dict); None when the run has no such path."""
    run = as_result(result)
    if category == "phase":
        phase, inner, inner_args = args
        view = phase_view(run, phase)
        if view is None:
            raise MetricError(f"'{phase}.' needs a live-patched run (live_patch = FILE in its [runs] table)")
        return resolve(view, inner, inner_args)
    if category in PROBE_CATEGORIES:
        (name,) = args
        probe = run.find_probe(name)
        if probe is None:
            known = ", ".join(f"{p.role} ({p.symbol})" for p in run.probes)
            raise MetricError(f"no probe with role or symbol '{name}' (probes: {known})")
        if category == "hits":
            return probe.hits.workload
        if category == "boot_hits":
            return probe.hits.boot
        return probe.per_iteration
    guest = run.guest or {}
    if category == "guest":
        (key,) = args
        if not is_number(guest.get(key)):
            known = ", ".join(k for k, v in guest.items() if is_number(v))
            raise MetricError(f"the guest's summary has no number '{key}' (it has: {known or 'nothing'})")
        return guest[key]
    if category in ("cycles_per_iteration", "iterations"):
        if not is_number(guest.get(category)):
            raise MetricError(f"the guest's summary has no '{category}'")
        return guest[category]
    if run.paths is None:
        raise MetricError("the run traced no fault paths (it needs tracing and a fault-entry probe)")
    if category == "user_fault_searches":
        return user_fault_searches([p.to_dict() for p in run.paths])
    if category == "path":
        shape, stat = args
        row = path_row(run, shape)
        if row is None:
            return 0 if stat == "count" else None
        return getattr(row, stat)
    if category == "iteration":
        return getattr(run.trace.iteration, args[0]) if run.trace is not None else None
    raise MetricError(f"unknown metric '{category}'")


def value(result, category, args=()):
    """resolve(), with None for a metric this run does not have (compare's rows show '-')."""
    try:
        return resolve(result, category, args)
    except MetricError:
        return None
