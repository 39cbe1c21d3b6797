"""Fault paths: name each traced path's shape and summarise its costs.

A backend (the GDB probe engine or the TCG plugin) reports each fault as the
list of probe roles hit between its entry and its return, with the guest
instructions it took. Here the role lists become the shapes a kernel
developer knows; shapes we do not know are kept, named by their events.
"""
import statistics

from gdbfault.model.roles import RESOLVED, SEARCH, SIGNAL, USER_FAULT

__all__ = ["classify", "summarise_paths", "cost_stats", "hist_stats", "user_fault_searches", "shape_alias",
           "USER_SIGNAL_SHAPES", "SHAPE_ALIASES", "KERNEL_FIXUP", "RESOLVED_SHAPE"]

USER_SEARCH_SIGNAL = "user bad area → exception search → signal"
USER_SIGNAL = "user bad area → signal"
KERNEL_FIXUP = "kernel fault → exception search → fixup"
RESOLVED_SHAPE = "resolved (handle_mm_fault)"
USER_SIGNAL_SHAPES = (USER_SEARCH_SIGNAL, USER_SIGNAL)
# Short names for shapes (`gdbfault inspect --path`): each the first of its list a run has.
SHAPE_ALIASES = {"user-signal": USER_SIGNAL_SHAPES, "resolved": (RESOLVED_SHAPE,), "kernel-fixup": (KERNEL_FIXUP,)}

_KNOWN = {
    (SEARCH, SIGNAL): USER_SEARCH_SIGNAL,
    (SIGNAL,): USER_SIGNAL,
    (SEARCH,): KERNEL_FIXUP,
    (RESOLVED,): RESOLVED_SHAPE,
}


def classify(events, returned=True, open_label=None):
    """The shape name of one path, from its event roles in order.

    A "user fault" event (modern Linux's do_user_addr_fault, a step every
    user-address fault takes) says nothing about the path's shape. A path
    that did not return is named by `open_label` (what ended the run, e.g.
    "cut off by the stop"), by default "never returned (oops?)".
    """
    events = tuple(e for e in events if e != USER_FAULT)
    if not returned:
        return (open_label or "never returned (oops?)") + (f": {' → '.join(events)}" if events else "")
    if events in _KNOWN:
        return _KNOWN[events]
    if not events:
        return "no probe events (other fault)"
    return "other: " + " → ".join(events)


def shape_alias(shape):
    """The short name of a shape (SHAPE_ALIASES), or the shape itself."""
    return next((alias for alias, shapes in SHAPE_ALIASES.items() if shape in shapes), shape)


def cost_stats(costs):
    """min, median, p95, max of a list of instruction counts (None when empty)."""
    if not costs:
        return {"min": None, "median": None, "p95": None, "max": None}
    s = sorted(costs)
    p95 = s[min(len(s) - 1, max(0, -(-95 * len(s) // 100) - 1))]
    med = statistics.median(s)
    return {"min": s[0], "median": int(med) if med == int(med) else med, "p95": p95, "max": s[-1]}


def user_fault_searches(paths):
    """How many traced faults both searched the exception table and raised a
    signal: the user faults that reached the search (the seed's subject)."""
    return sum(p["count"] for p in paths if SEARCH in p.get("events", []) and SIGNAL in p.get("events", []))


def hist_stats(hist):
    """min, median, p95, max of {cost: count} without expanding it."""
    items = sorted((int(c), int(n)) for c, n in hist.items() if int(n) > 0)
    total = sum(n for _, n in items)
    if not total:
        return cost_stats([])

    def nth(k):                       # the k-th smallest cost, 0-based
        seen = 0
        for cost, n in items:
            seen += n
            if k < seen:
                return cost
        return items[-1][0]
    mid = (nth((total - 1) // 2) + nth(total // 2)) / 2
    p95 = nth(min(total - 1, max(0, -(-95 * total // 100) - 1)))
    return {"min": items[0][0], "median": int(mid) if mid == int(mid) else mid, "p95": p95,
            "max": items[-1][0]}


def summarise_paths(trace, phase="workload", open_label=None):
    """RunResult 'paths' rows from a backend's trace snapshot.

    A backend gives each (phase, events) either a list of costs (GDB) or a
    histogram {cost: count} (the plugin); both become one histogram a shape.
    """
    merged = {}

    def row_for(events, returned=True):
        shape = classify(events, returned, open_label)
        return merged.setdefault(shape, {"shape": shape, "events": list(events), "count": 0,
                                         "costed": 0, "hist": {}})
    for p in trace.get("paths", []):
        if p.get("phase", "workload") != phase:
            continue
        row = row_for(p["events"])
        hist = row["hist"]
        for c in p.get("costs", []):
            hist[c] = hist.get(c, 0) + 1
        for c, n in (p.get("cost_hist") or {}).items():
            hist[int(c)] = hist.get(int(c), 0) + int(n)
        costed = len(p.get("costs", [])) + sum(int(n) for n in (p.get("cost_hist") or {}).values())
        row["count"] += p.get("count", costed)
        row["costed"] += costed
    for o in trace.get("open", []):
        if o.get("phase", "workload") == phase:
            row_for(o["events"], returned=False)["count"] += 1
    rows = []
    for row in sorted(merged.values(), key=lambda r: -r["count"]):
        hist = row.pop("hist")
        row.update(hist_stats(hist))
        row["cost_hist"] = {str(c): n for c, n in sorted(hist.items())}
        rows.append(row)
    return rows
