"""Do two backends agree? `attach --backend plugin --verify-with gdb` runs the same spec on both and compares.

Per-role workload hits, path shapes and their costs must be the same: the
plugin counts without stopping the guest, the GDB backend with breakpoints
in a replay, so any difference is a bug in one of them — with one known
exception the plugin reports itself: a path whose window holds a fault
nested inside the handler (on x86_64 Linux, the first signal frame written
to a stack page not yet mapped) is counted whole-block and comes out a few
instructions high; the plugin counts such paths (`inexact_paths`). As many
costs as that may be above GDB's; they are said apart (`inexact_costs`).
"""
from gdbfault.model.result import CrossCheck, as_result

__all__ = ["cross_check"]


def cross_check(plugin_result, gdb_result):
    """Do two backends agree? Per-role workload hits, path shapes and their costs (a CrossCheck)."""
    plugin_result, gdb_result = as_result(plugin_result), as_result(gdb_result)
    diffs = []
    for p in plugin_result.probes:
        other = gdb_result.probe(p.role)
        other_hits = other.hits.workload if other is not None else None
        if other_hits != p.hits.workload:
            diffs.append(f"{p.role} ({p.symbol}): plugin {p.hits.workload}, gdb {other_hits}")
    plugin_paths = {r.shape: r for r in plugin_result.paths or []}
    gdb_paths = {r.shape: r for r in gdb_result.paths or []}
    trace = plugin_result.trace
    budget = (trace.inexact_paths or 0) if trace is not None else 0
    high = 0
    for shape in sorted(set(plugin_paths) | set(gdb_paths)):
        a, b = plugin_paths.get(shape), gdb_paths.get(shape)
        if a is None or b is None or a.count != b.count:
            diffs.append(f"path '{shape}': plugin {a and a.count}, gdb {b and b.count}")
        elif a.cost_hist and b.cost_hist and a.cost_hist != b.cost_hist:
            above = _costs_above(a.cost_hist, b.cost_hist)
            if above is None or high + above > budget:
                diffs.append(f"path '{shape}': costs differ (median plugin {a.median}, gdb {b.median})")
            else:
                high += above
    check = CrossCheck(backend="gdb", agree=not diffs, differences=diffs,
                       gdb_duplicates_filtered=gdb_result.run.duplicates or 0,
                       gdb_wall_s=gdb_result.run.wall_s)
    if high:
        check.inexact_costs = high
    return check


def _costs_above(plugin_hist, gdb_hist):
    """How many of the plugin's costs are above GDB's when both are sorted and paired, or None
    when one is below (never what a nested fault does)."""
    def costs(hist):
        return sorted(int(c) for c, n in hist.items() for _ in range(n))
    pairs = list(zip(costs(plugin_hist), costs(gdb_hist)))
    if any(p < g for p, g in pairs):
        return None
    return sum(p > g for p, g in pairs)
