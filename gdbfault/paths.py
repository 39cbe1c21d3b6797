"""Fault paths: name each traced path's shape and summarise its costs.

A backend (the GDB probe engine or the TCG plugin) reports each fault as the
list of probe roles hit between its entry and its return, with the guest
instructions it took. Here the role lists become the shapes a kernel
developer knows; shapes we do not know are kept, named by their events.
"""
import statistics

from gdbfault.profiles import RESOLVED, SEARCH, SIGNAL, USER_FAULT

__all__ = ["classify", "summarise_paths", "cost_stats", "USER_SIGNAL_SHAPES"]

USER_SEARCH_SIGNAL = "user bad area → exception search → signal"
USER_SIGNAL = "user bad area → signal"
KERNEL_FIXUP = "kernel fault → exception search → fixup"
RESOLVED_SHAPE = "resolved (handle_mm_fault)"
USER_SIGNAL_SHAPES = (USER_SEARCH_SIGNAL, USER_SIGNAL)

_KNOWN = {
    (SEARCH, SIGNAL): USER_SEARCH_SIGNAL,
    (SIGNAL,): USER_SIGNAL,
    (SEARCH,): KERNEL_FIXUP,
    (RESOLVED,): RESOLVED_SHAPE,
}


def classify(events, returned=True):
    """The shape name of one path, from its event roles in order.

    A "user fault" event (modern Linux's do_user_addr_fault, a step every
    user-address fault takes) says nothing about the path's shape.
    """
    events = tuple(e for e in events if e != USER_FAULT)
    if not returned:
        return "never returned (oops?)" + (f": {' → '.join(events)}" if events else "")
    if events in _KNOWN:
        return _KNOWN[events]
    if not events:
        return "no probe events (other fault)"
    return "other: " + " → ".join(events)


def cost_stats(costs):
    """min, median, p95, max of a list of instruction counts (None when empty)."""
    if not costs:
        return {"min": None, "median": None, "p95": None, "max": None}
    s = sorted(costs)
    p95 = s[min(len(s) - 1, max(0, -(-95 * len(s) // 100) - 1))]
    med = statistics.median(s)
    return {"min": s[0], "median": int(med) if med == int(med) else med, "p95": p95, "max": s[-1]}


def summarise_paths(trace, phase="workload"):
    """RunResult 'paths' rows from a backend's trace snapshot."""
    merged = {}
    for p in trace.get("paths", []):
        if p.get("phase", "workload") != phase:
            continue
        shape = classify(p["events"])
        row = merged.setdefault(shape, {"shape": shape, "events": list(p["events"]), "count": 0, "costs": []})
        costs = list(p.get("costs", []))
        for cost, n in (p.get("cost_hist") or {}).items():    # the plugin's histogram form
            costs.extend([int(cost)] * int(n))
        row["count"] += p.get("count", len(costs))
        row["costs"].extend(costs)
    for o in trace.get("open", []):
        if o.get("phase", "workload") != phase:
            continue
        shape = classify(o["events"], returned=False)
        row = merged.setdefault(shape, {"shape": shape, "events": list(o["events"]), "count": 0, "costs": []})
        row["count"] += 1
    rows = []
    for row in sorted(merged.values(), key=lambda r: -r["count"]):
        costs = row.pop("costs")
        row.update(cost_stats(costs))
        row["costed"] = len(costs)
        hist = {}
        for c in costs:
            hist[c] = hist.get(c, 0) + 1
        row["cost_hist"] = {str(c): n for c, n in sorted(hist.items())}
        rows.append(row)
    return rows
