#!/usr/bin/env python3
"""Print the import graph of the gdbfault package, its circles, and private names imported across modules.

Every import counts, also those inside functions (a lazy import still ties
two modules together). Read from the source with ast: nothing is imported.

    python3 scripts/import_graph.py            # the graph, then any circle or private import
Exit status 1 when there is a circle or a private import.
"""
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gdbfault"


def module_name(path, package=PACKAGE):
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _target(node, here, known):
    """The gdbfault module an ImportFrom/Import node names, and the names it takes."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names if alias.name in known]
    base = node.module or ""
    if node.level:                        # relative import
        pkg = here.split(".")[:-node.level] if not here.endswith("__init__") else here.split(".")
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:                  # `from gdbfault import checks`: the module itself
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


def circles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
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


def main():
    graph, private = import_graph()
    short = lambda m: m.removeprefix("gdbfault.") or m
    for mod in sorted(graph):
        deps = sorted(short(t) for t in graph[mod])
        print(f"{short(mod):16} -> {', '.join(deps) if deps else '(nothing of gdbfault)'}")
    found = circles(graph)
    for comp in found:
        print("circle: " + " <-> ".join(short(m) for m in comp))
    for mod, target, name in private:
        print(f"private import: {short(mod)} takes {name} from {short(target)}")
    if not found and not private:
        print("no circle, no private import")
    return 1 if found or private else 0


if __name__ == "__main__":
    sys.exit(main())
