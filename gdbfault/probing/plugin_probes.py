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
from gdbfault.kernels.disasm import direct_call_return_sites
from gdbfault.machine.plugins import PluginResultError, read_plugin_json
from gdbfault.model.roles import ENTRY

__all__ = ["PROBE_KINDS", "COUNT_PHASES", "FAULT_STUBS", "plugin_probe_list", "fault_return_sites",
           "needs_learned_returns", "write_probe_file", "read_plugin_result"]

PROBE_KINDS = ("count", "entry", "event", "ret", "arm", "mark")
# The plugin counts every probe apart before and after the arm probe (the workload's entry).
COUNT_PHASES = ("boot", "workload")
RESULT_VERSION = 1
# The entry stubs that call the fault entry directly: 2.x-style `page_fault` (the
# lab kernel's, Linux 2.x's: `call do_page_fault`) and x86_64 Linux 5.8+'s IDT stub
# `asm_exc_page_fault` (`call exc_page_fault`, never patched). (i386 6.1's stub jumps to
# handle_exception, which calls the handler indirectly through a retpoline thunk, at
# a site every exception shares: no return site of its own to read from the code.)
FAULT_STUBS = ("page_fault", "asm_exc_page_fault")


def fault_return_sites(code_file, symbols, entry):
    """The return sites of the fault entry probe `entry`: the instructions after each direct
    call to it in a FAULT_STUBS stub, read from `code_file` (an ELF of the running kernel's
    code, symbols or not) between the stub's symbol and the next one; [] when none is found."""
    sites = []
    if code_file is None or entry is None:
        return sites
    for stub in FAULT_STUBS:
        start = symbols.address(stub)
        stop = symbols.next_address(start) if start is not None else None
        if stop is None:
            continue
        try:
            sites += direct_call_return_sites(code_file, start, stop, entry.address)
        except GdbfaultError:
            pass
    return sorted(set(sites))


def plugin_probe_list(code_file, symbols, probes, arm, arm_name="workload_start"):
    """[(address, kind, name)] for the plugin from a run's resolved probes; names are the probe symbols.

    The fault entry opens a path; its return sites (fault_return_sites, when
    the kernel's code is at hand) close it. Without them the plugin can learn
    them itself (needs_learned_returns)."""
    entry = next((p for p in probes if p.role == ENTRY), None)
    out = [(p.address, "entry" if p is entry else "event", p.symbol) for p in probes]
    sites = fault_return_sites(code_file, symbols, entry)
    out += [(addr, "ret", f"return_{i}") for i, addr in enumerate(sites)]
    if arm is not None:
        out.append((arm, "arm", arm_name))
    return out


def needs_learned_returns(plist):
    """A fault entry with no return site in the list: the plugin is to learn them (autoret=on):
    each translated direct `call` to an entry probe makes the next instruction a return site."""
    kinds = {kind for _, kind, _ in plist}
    return "entry" in kinds and "ret" not in kinds


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
