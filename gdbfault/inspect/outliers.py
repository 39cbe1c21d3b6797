"""The report explains its outliers: for each path shape whose slowest fault costs more than its median,
what the slowest one ran that a typical one did not.

From the kept recording, as `gdbfault inspect` would: one replay saves a
snapshot at each such fault's entry and at a median-cost fault's of the same
shape (in instruction order, no breakpoint stops on the way), then the
kernel-profile plugin takes each one's call tree (calltree.py). The two
trees are compared path by path: what the slow one spent in calls the typical
one never made (grouped under the first such call, with its heaviest chain
down), or, when both made the same calls, where its own instructions grew.
The 8443-instruction demand-zero fault of the lab kernel then reads
"handle_pte_fault → do_anonymous_page → get_zeroed_page → memset 4,163 ·
pte_alloc → get_zeroed_page → memset 4,138" (the typical fault, a write to a
read-only page, calls neither do_anonymous_page nor get_zeroed_page), a
user-signal fault that a timer tick hit "search_exception_table →
irq0_interrupt → do_IRQ → do_timer 74".
"""
from gdbfault.base.errors import GdbfaultError
from gdbfault.base.lifecycle import shielded
from gdbfault.inspect.calltree import fault_tree
from gdbfault.inspect.fault import KeptRun, reach
from gdbfault.inspect.replay import Scratch

__all__ = ["explain_outliers", "compare_trees", "outlier_text", "OUTLIERS_NOT_EXPLAINED"]

# How a run's recording note begins when its outliers could not be explained.
OUTLIERS_NOT_EXPLAINED = "its outliers were not explained"


def compare_trees(slow, typical, top=2):
    """[{path, instructions}]: what `slow` (a CallTree) ran beyond `typical`, biggest first."""
    seen = {path: row for path, row in typical.paths()}
    groups, grown = [], []
    for path, row in slow.paths():
        if path in seen:
            extra = row["own"] - seen[path]["own"]
            if extra > 0:
                grown.append({"path": list(path[-2:]), "instructions": extra})
        elif path[:-1] in seen or len(path) == 1:
            groups.append({"path": _heaviest_chain(slow, path), "instructions": row["instructions"]})
    out = sorted(groups, key=lambda g: -g["instructions"])[:top]
    if not out:
        out = sorted(grown, key=lambda g: -g["instructions"])[:top]
    return out


def _heaviest_chain(tree, start):
    """From the caller of the row at path `start` down through it, always into the heaviest callee:
    the chain of names."""
    paths = tree.paths()
    chain = list(start)
    while True:
        children = [(p, r) for p, r in paths if len(p) == len(chain) + 1 and list(p[:-1]) == chain]
        if not children:
            return chain[max(0, len(start) - 2):]
        chain = list(max(children, key=lambda c: c[1]["instructions"])[0])


def _chain_text(path, most=5):
    """A call chain as the report shows it: at most `most` names (its head, an ellipsis, its end)."""
    if len(path) > most:
        path = path[:most - 2] + ["…"] + path[-1:]
    return " → ".join(path)


def outlier_text(o):
    """The report's line for one explained outlier."""
    where = f"iteration {o['iteration']} (fault {o['fault']})" if o["iteration"] is not None else f"fault {o['fault']}"
    what = " · ".join(f"{_chain_text(g['path'])} {g['instructions']:,}" for g in o["groups"]) or "no difference found"
    return f"slowest {o['shape']}: {o['cost']:,} at {where}, median {o['median']:,}: {what}"


def explain_outliers(folder, result, deadline):
    """result.recording.outliers from the kept recording in `folder` (see the module docstring)."""
    run = KeptRun(None, result, folder)
    wanted = []
    for shape, s in (result.recording.shapes or {}).items():
        if s["count"] > 1 and s["max"]["cost"] != s["median"]:
            wanted.append((shape, run.index.number(s["max"]["fault"]), run.index.median_instance(shape)))
    if not wanted:
        return []
    scratch = Scratch(run.kept)
    try:
        targets = {(f.icount, f"gdbfault-explain-{f.number}") for _, slow, typical in wanted for f in (slow, typical)}
        saved = reach(run, scratch, list(targets), deadline)
        ranges = run.ranges(scratch)
        trees = {}
        for name, at in saved.items():
            number = int(name.rsplit("-", 1)[1])
            trees[number] = fault_tree(scratch, at, run.index.number(number).cost, ranges, deadline)
        out = []
        for shape, slow, typical in wanted:
            if slow.number not in trees or typical.number not in trees:
                raise GdbfaultError(f"no snapshot before fault {slow.number} to explain it from")
            o = {"shape": shape, "fault": slow.number, "iteration": slow.iteration, "cost": slow.cost,
                 "median": typical.cost, "typical_fault": typical.number,
                 "groups": compare_trees(trees[slow.number], trees[typical.number])}
            o["text"] = outlier_text(o)
            out.append(o)
        return out
    finally:
        with shielded():
            scratch.close()
