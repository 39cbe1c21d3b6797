"""Where one fault's instructions went: its call tree, exact, from the kernel-profile plugin over an instruction window.

A replay started from a snapshot saved at the fault's entry (instruction E),
with the kernel-profile plugin loaded (qemu/plugin/kprofile.c) and stopped by
QMP `replay-break` at E + the fault's cost, runs exactly the fault's
instructions; the plugin's shadow call stack starts empty there, so the
fault entry is the tree's root and its totals are the tracer's cost. The
plugin writes its counts when QEMU quits. Each row is one node of the tree
(a function reached by one call path): its instructions with everything it
called (inclusive), its own, and how often that path was entered (calls).

What this needs from the plugin, and nothing else (`PLUGIN_OPTIONS` and
`_read`): the options `ranges=FILE`, `out=FILE`, `chains=on` and `node_calls=on`; in its
output, "functions" [{id, name, start, end}], "nodes" [[node id, parent node
id (0: none), function id, [instructions per phase]]], "node_calls" [[node
id, [entries per phase]]], "user" [instructions per phase] and "left_early"
[per phase] (blocks left at a faulting instruction: one attempt each counted
that -icount does not count). Phases do not matter here (no marks are given:
everything is one phase), so every count is summed over them.
"""
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.kprofile.ranges import kernel_base, kernel_functions, uaccess_sites, write_ranges
from gdbfault.kprofile.result import read_kprofile_result
from gdbfault.machine.plugins import plugin_args, plugin_library

__all__ = ["CallTree", "fault_tree", "kernel_ranges", "PLUGIN_OPTIONS"]

# The kernel-profile plugin's options for a call tree with calls per node (module docstring).
PLUGIN_OPTIONS = {"chains": "on", "node_calls": "on"}


class CallTree:
    """A fault's call tree: rows in call order, depth first (module docstring)."""

    def __init__(self, rows, user=0, left_early=0):
        # left_early: blocks left at an instruction that then ran again (a fault, or an I/O instruction
        # QEMU re-runs alone under -icount): each is counted once more than -icount counts it
        self.rows, self.user, self.left_early = rows, user, left_early

    @property
    def kernel(self):
        return sum(r["own"] for r in self.rows)

    @property
    def total(self):
        return self.kernel + self.user

    def paths(self):
        """[(symbols from the root, row)] of every row."""
        out, stack = [], []
        for row in self.rows:
            del stack[row["depth"]:]
            stack.append(row["symbol"])
            out.append((tuple(stack), row))
        return out

    def deepest(self):
        """The call chain of the deepest point (the longest path; of those, the one with most own instructions)."""
        paths = self.paths()
        if not paths:
            return []
        return list(max(paths, key=lambda p: (len(p[0]), p[1]["own"]))[0])

    def own_by_function(self):
        """{symbol: own instructions} over the whole tree."""
        out = {}
        for row in self.rows:
            out[row["symbol"]] = out.get(row["symbol"], 0) + row["own"]
        return out

    def path_to(self, symbol):
        """The call chain from the root to the first row of `symbol`."""
        return next((list(p) for p, row in self.paths() if row["symbol"] == symbol), [])

    def to_list(self):
        return [{k: r[k] for k in ("symbol", "depth", "instructions", "own", "calls")} for r in self.rows]


def _read(data):
    """CallTree from the plugin's output."""
    names = {f["id"]: f["name"] for f in data["functions"]}
    nodes = {n[0]: {"parent": n[1], "func": n[2], "own": sum(n[3])} for n in data["nodes"]}
    calls = {n: sum(c) for n, c in data.get("node_calls", [])}
    children = {}
    for ix in sorted(nodes):
        children.setdefault(nodes[ix]["parent"] if nodes[ix]["parent"] in nodes else 0, []).append(ix)

    inclusive = {}

    def total(ix):
        if ix not in inclusive:
            inclusive[ix] = nodes[ix]["own"] + sum(total(c) for c in children.get(ix, []))
        return inclusive[ix]
    rows = []

    def walk(ix, depth):
        if total(ix) == 0:
            return
        # a root was entered before the window opened: once
        rows.append({"symbol": names.get(nodes[ix]["func"], f"[function {nodes[ix]['func']}]"), "depth": depth,
                     "instructions": total(ix), "own": nodes[ix]["own"],
                     "calls": calls.get(ix, 1 if depth == 0 else 0), "node": ix})
        for child in children.get(ix, []):
            walk(child, depth + 1)
    for root in children.get(0, []):
        walk(root, 0)
    return CallTree(rows, sum(data["user"]), sum(data["left_early"]) + sum(data.get("inexact_left_early", [])))


def kernel_ranges(path, kernel, system_map=None, replacements=()):
    """Write the plugin's ranges file for a kernel (its ELF, or a System.map), with a live patch's
    replacement functions ([{name, new, size}]) named as such; the function list."""
    funcs = kernel_functions(kernel, system_map)
    for r in replacements:
        funcs.append({"symbol": f"{r['name']}.livepatch", "address": r["new"], "end": r["new"] + r["size"],
                      "aliases": [], "entry": False})
    funcs.sort(key=lambda f: f["address"])
    uaccess = uaccess_sites(kernel, funcs) if system_map is None else []
    write_ranges(path, funcs, kernel_base(funcs), [], uaccess)
    return funcs


def fault_tree(scratch, at, cost, ranges, deadline=None):
    """The call tree of the `cost` instructions after snapshot `at` ({name, icount}: the fault's entry)."""
    library = plugin_library("kprofile")
    out = Path(scratch.folder) / "fault-tree.json"
    out.unlink(missing_ok=True)
    replay = scratch.start(at, plugins=plugin_args(library, ranges=Path(ranges), out=out, **PLUGIN_OPTIONS))
    try:
        replay.run_to(at["icount"] + cost, deadline=deadline)
        replay.quit()
    finally:
        replay.close()
    if not out.is_file():
        raise GdbfaultError("the kernel-profile plugin wrote no call tree (did QEMU quit in order?)")
    return _read(read_kprofile_result(out))
