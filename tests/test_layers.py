"""The package's layers, read from its tree: rooms (top-level folders) that import only downwards.

Read from the source by scripts/import_graph.py (every import counts, lazy
ones too); nothing is imported or run. One rule: the rooms' import graph has
no circle, and README.md's Layout lists the rooms from the top floor down, so
every import goes from a room listed higher to one listed lower.
"""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"
_spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


def _graph():
    graph, private = import_graph.import_graph()
    assert graph.get("gdbfault.runs.booted"), "the graph reader found no imports"
    return graph, private


def test_no_import_circle_between_modules():
    graph, _ = _graph()
    assert import_graph.circles(graph) == []


def test_no_import_circle_between_rooms():
    graph, _ = _graph()
    assert import_graph.circles(import_graph.room_graph(graph)) == []


def test_the_circle_finder_finds_one():
    assert import_graph.circles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == \
        [["a", "b", "c"]]


def test_floors_follow_the_imports():
    assert import_graph.floors({"top": {"mid": [], "low": []}, "mid": {"low": []}, "low": {}}) == \
        {"top": 3, "mid": 2, "low": 1}


def test_no_private_name_is_imported_from_another_module():
    _, private = _graph()
    assert private == []


def test_the_readme_lists_every_room_and_each_imports_only_rooms_listed_below_it():
    graph, _ = _graph()
    rooms = import_graph.room_graph(graph)
    listed = import_graph.readme_rooms()
    actual = set(rooms) - {"__init__"}
    assert sorted(listed) == sorted(actual), "README.md's Layout must list exactly the package's rooms"
    for i, room in enumerate(listed):
        above = set(listed[:i]) & set(rooms[room])
        assert not above, (f"{room} imports {sorted(above)}, listed above it in README.md's Layout: "
                           f"{rooms[room][sorted(above)[0]][:3]}")


def test_nothing_imports_the_command_line():
    graph, _ = _graph()
    for mod, targets in graph.items():
        if import_graph.room_of(mod) not in ("cli", "__main__"):
            assert not any(import_graph.room_of(t) == "cli" for t in targets), f"{mod} imports the CLI"


def test_the_top_of_the_package_is_a_dozen_rooms_or_so():
    graph, _ = _graph()
    assert len(import_graph.room_graph(graph)) <= 16
