#!/usr/bin/env python3
"""The import graph of the gdbfault package, by module and by room (the package's top-level folders).

Every import counts, also those inside functions (a lazy import still ties
two modules together). Read from the source with ast: nothing is imported.

A room is one entry at the top of the package: a folder (`machine/`,
`backends/`, ...) or a module (`cli.py`). The rooms are the layers: a room's
floor is one above the highest room it imports, so the floors are read from
the code, and README.md's Layout lists the rooms from the top floor down
(tests/test_layers.py holds the two against each other).

    python3 scripts/import_graph.py            # the rooms by floor, then any circle or private import
    python3 scripts/import_graph.py --modules  # every module's imports
Exit status 1 when there is a circle (of modules or of rooms) or a private import.
"""
import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gdbfault"
README = PACKAGE.parent / "README.md"


def module_name(path, package=PACKAGE):
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _target(node, here, known):
    """The gdbfault modules an ImportFrom/Import node names, and the names it takes."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names if alias.name in known]
    base = node.module or ""
    if node.level:                        # relative import
        pkg = here.split(".")[:-node.level] if not here.endswith("__init__") else here.split(".")
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:                  # `from gdbfault.analysis import compare`: the module itself
            out.append((sub, None))
        elif base in known:
            out.append((base, alias.name))
    return out


def import_graph(package=PACKAGE):
    """({module: {imported module: [names]}}, [(module, imported module, private name)])."""
    files = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    known = set(files)
    graph, private = {m: {} for m in files}, []
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target, name in _target(node, mod, known):
                if target == mod:
                    continue
                graph[mod].setdefault(target, [])
                if name:
                    graph[mod][target].append(name)
                    if name.startswith("_") and not name.startswith("__"):
                        private.append((mod, target, name))
    # a package's own __init__ is imported with every submodule: not an edge of interest
    for mod in graph:
        for target in list(graph[mod]):
            if mod.startswith(target + "."):
                del graph[mod][target]
    return graph, private


def room_of(module):
    """The room a module stands in: 'machine' for gdbfault.machine.qemu, 'cli' for gdbfault.cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def room_graph(graph):
    """{room: {imported room: [(module, imported module)]}}: the arrows between rooms."""
    rooms = {}
    for mod, targets in graph.items():
        here = rooms.setdefault(room_of(mod), {})
        for target in targets:
            there = room_of(target)
            if there not in (room_of(mod), "__init__"):
                here.setdefault(there, []).append((mod, target))
    return rooms


def circles(graph):
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def floors(rooms):
    """{room: floor}: 1 for a room that imports no other room, else one above its highest import.
    (The room graph must have no circle.)"""
    floor = {}

    def visit(room):
        if room not in floor:
            floor[room] = 0                       # guards against a circle: it would read as floor 1
            floor[room] = 1 + max((visit(t) for t in rooms.get(room, {})), default=0)
        return floor[room]
    for room in rooms:
        visit(room)
    return floor


def readme_rooms(readme=README):
    """The rooms README.md's Layout section lists, top floor first: the first word of each
    line of the first code block under '## Layout' (`cli.py`, `analysis/`, ...)."""
    text = readme.read_text()
    section = text.split("\n## Layout", 1)[1]
    block = section.split("```", 2)[1]
    names = []
    for line in block.splitlines()[1:]:
        m = re.match(r"\s*(\S+?)(/|\.py)\s", line + " ")
        if m:
            names.append(m.group(1))
    return names


def main(argv):
    graph, private = import_graph()
    short = lambda m: m.removeprefix("gdbfault.") or m
    if "--modules" in argv:
        for mod in sorted(graph):
            deps = sorted(short(t) for t in graph[mod])
            print(f"{short(mod):32} -> {', '.join(deps) if deps else '(nothing of gdbfault)'}")
    rooms = room_graph(graph)
    room_circles = circles(rooms)
    if not room_circles:
        floor = floors(rooms)
        for room in sorted(rooms, key=lambda r: (-floor[r], r)):
            lines = sum(len(p.read_text().splitlines()) for m, p in _files().items() if room_of(m) == room)
            print(f"floor {floor[room]:2}  {room:10} {lines:5} lines -> {', '.join(sorted(rooms[room])) or '-'}")
    found = circles(graph)
    for comp in room_circles:
        print("room circle: " + " <-> ".join(comp))
    for comp in found:
        print("circle: " + " <-> ".join(short(m) for m in comp))
    for mod, target, name in private:
        print(f"private import: {short(mod)} takes {name} from {short(target)}")
    if not found and not private and not room_circles:
        print("no circle, no private import")
    return 1 if found or private or room_circles else 0


def _files():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
