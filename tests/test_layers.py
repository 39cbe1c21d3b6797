"""The package's layers: no import circle, no private name taken across modules.

Read from the source by scripts/import_graph.py (every import counts, lazy
ones too); nothing is imported or run.
"""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"
_spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

# The measuring core, lowest first: a module may import only modules listed before it.
CORE = ["gdbfault.result", "gdbfault.spec", "gdbfault.machine_config", "gdbfault.truth", "gdbfault.measure", "gdbfault.probe_session",
        "gdbfault.livepatch_run", "gdbfault.plugin_run", "gdbfault.attach", "gdbfault.gdb_run", "gdbfault.run", "gdbfault.runner",
        "gdbfault.metrics", "gdbfault.compare", "gdbfault.checks", "gdbfault.cli"]


def _graph():
    graph, private = import_graph.import_graph()
    assert "gdbfault.run" in graph and graph["gdbfault.run"], "the graph reader found no imports"
    return graph, private


def test_no_import_circle():
    graph, _ = _graph()
    assert import_graph.circles(graph) == []


def test_the_circle_finder_finds_one():
    assert import_graph.circles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == \
        [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    _, private = _graph()
    assert private == []


def test_the_measuring_core_imports_only_downwards():
    graph, _ = _graph()
    for i, mod in enumerate(CORE):
        higher = set(CORE[i + 1:]) & set(graph[mod])
        assert not higher, f"{mod} imports {sorted(higher)}, which sit above it"
