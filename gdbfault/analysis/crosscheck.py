"""Do two backends agree? `attach --backend plugin --verify-with gdb` runs the same spec on both and compares.

Per-role workload hits, path shapes and their costs must be the same: the
plugin counts without stopping the guest, the GDB backend with breakpoints
in a replay, so any difference is a bug in one of them.
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
    for shape in sorted(set(plugin_paths) | set(gdb_paths)):
        a, b = plugin_paths.get(shape), gdb_paths.get(shape)
        if a is None or b is None or a.count != b.count:
            diffs.append(f"path '{shape}': plugin {a and a.count}, gdb {b and b.count}")
        elif a.cost_hist and b.cost_hist and a.cost_hist != b.cost_hist:
            diffs.append(f"path '{shape}': costs differ (median plugin {a.median}, gdb {b.median})")
    return CrossCheck(backend="gdb", agree=not diffs, differences=diffs,
                      gdb_duplicates_filtered=gdb_result.run.duplicates or 0,
                      gdb_wall_s=gdb_result.run.wall_s)
