"""The zero-stop backend's probes: what gdbfault's counting plugin (qemu/plugin/faultcount.c) is told, and what it says.

The plugin counts probe executions and traces fault paths inside QEMU
itself, so the guest never stops for a breakpoint: counts are exact, path
costs are exact guest instruction counts, and the guest cannot tell it is
being watched. This module is the Python side of that contract (loading
the plugin is machine/plugins.py's):

- `plugin_probe_list()` turns a run's resolved probes into the plugin's list;
- `write_probe_file()` writes it (one ``<hex address> <kind> <name>`` a line);
- `read_plugin_result()` reads and checks the JSON it writes at QEMU exit.

Probe kinds: ``count`` (count executions), ``entry`` (opens a path),
``event`` (counted and appended to the innermost open path), ``ret`` (closes
the innermost open path), ``arm`` (its first execution ends the boot phase),
``mark`` (snapshots every count and tags later paths: a live patch's moment).
"""
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.kernels.disasm import call_return_sites
from gdbfault.kernels.symbols import is_elf
from gdbfault.machine.plugins import PluginResultError, read_plugin_json
from gdbfault.model.roles import ENTRY

__all__ = ["PROBE_KINDS", "COUNT_PHASES", "plugin_probe_list", "write_probe_file", "read_plugin_result"]

PROBE_KINDS = ("count", "entry", "event", "ret", "arm", "mark")
# The plugin counts every probe apart before and after the arm probe (the workload's entry).
COUNT_PHASES = ("boot", "workload")
RESULT_VERSION = 1
# The 2.x-style entry stub that calls the fault entry (the lab kernel's, Linux 2.x's).
FAULT_STUB = "page_fault"


def plugin_probe_list(kernel, probes, arm, arm_name="workload_start"):
    """[(address, kind, name)] for the plugin from a run's resolved probes; names are the probe symbols.

    The fault entry opens a path; its return site (the instruction after the
    stub's call into it, found in an ELF kernel's code) closes it."""
    entry = next((p for p in probes if p.role == ENTRY), None)
    out = [(p.address, "entry" if p is entry else "event", p.symbol) for p in probes]
    if entry is not None and is_elf(kernel):
        try:
            sites = call_return_sites(kernel, FAULT_STUB, entry.symbol)
        except GdbfaultError:
            sites = []
        out += [(addr, "ret", f"return_{i}") for i, addr in enumerate(sites)]
    if arm is not None:
        out.append((arm, "arm", arm_name))
    return out


def write_probe_file(path, probes):
    """Write probes, a list of (address: int, kind: str, name: str), to path."""
    lines = ["# gdbfault probes for the faultcount plugin: <hex address> <kind> <name>"]
    for probe in probes:
        try:
            address, kind, name = probe
        except (TypeError, ValueError):
            raise ValueError(f"probe {probe!r} is not (address, kind, name)") from None
        if not isinstance(address, int) or isinstance(address, bool) or address < 0:
            raise ValueError(f"probe {name!r}: address {address!r} is not a non-negative int")
        if kind not in PROBE_KINDS:
            raise ValueError(f"probe {name!r}: kind {kind!r} is not one of "
                             + ", ".join(PROBE_KINDS))
        if not isinstance(name, str) or not name or any(c.isspace() for c in name) \
                or "#" in name or len(name) > 255:
            raise ValueError(f"probe name {name!r} must be 1-255 characters "
                             "without spaces or '#'")
        lines.append(f"{address:#x} {kind} {name}")
    if len(lines) - 1 > 256:
        raise ValueError("the plugin takes at most 256 probes")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _check(cond, path, what):
    if not cond:
        raise PluginResultError(f"plugin result {path} is malformed: {what}")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_plugin_result(path) -> dict:
    """Read and validate the plugin's JSON result; return it as a dict.

    Raises PluginResultError when the file is missing (the plugin writes it
    only when QEMU exits normally: a killed QEMU leaves none) or corrupt.
    """
    path = Path(path)
    data = read_plugin_json(path, "plugin result")
    _check(data.get("backend") == "plugin", path, "backend is not 'plugin'")
    _check(data.get("version") == RESULT_VERSION, path,
           f"version {data.get('version')!r}, expected {RESULT_VERSION}")
    hits = data.get("hits")
    _check(isinstance(hits, dict), path, "'hits' is not an object")
    for name, by_phase in hits.items():
        _check(isinstance(by_phase, dict)
               and all(_is_count(by_phase.get(ph)) for ph in COUNT_PHASES),
               path, f"hits[{name!r}] lacks boot/workload counts")
    paths = data.get("paths")
    _check(isinstance(paths, list), path, "'paths' is not a list")
    for i, entry in enumerate(paths):
        _check(isinstance(entry, dict) and entry.get("phase") in COUNT_PHASES
               and isinstance(entry.get("entry"), str)
               and isinstance(entry.get("events"), list)
               and all(isinstance(e, str) for e in entry["events"])
               and isinstance(entry.get("cost_hist"), dict),
               path, f"paths[{i}] lacks phase/entry/events/cost_hist")
        for cost, n in entry["cost_hist"].items():
            _check(cost.isdigit() and _is_count(n), path,
                   f"paths[{i}].cost_hist has {cost!r}: {n!r}")
    for key in ("unmatched_ret", "open_paths_at_exit", "insns_total"):
        _check(_is_count(data.get(key)), path, f"'{key}' is not a count")
    return data
