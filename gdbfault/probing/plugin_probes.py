"""Zero-stop backend: gdbfault's QEMU TCG plugin (qemu/plugin/faultcount.c).

The plugin counts probe executions and traces fault paths inside QEMU
itself, so the guest never stops for a breakpoint: counts are exact, path
costs are exact guest instruction counts, and the guest cannot tell it is
being watched. This module is the Python side of that contract:

- `plugin_library()` finds the built plugin, or says what is missing;
- `write_probe_file()` writes the probe list the plugin reads
  (one ``<hex address> <kind> <name>`` a line);
- `qemu_plugin_args()` gives the QEMU command-line arguments that load it;
- `read_plugin_result()` reads and checks the JSON it writes at QEMU exit.

Probe kinds: ``count`` (count executions), ``entry`` (opens a path),
``event`` (counted and appended to the innermost open path), ``ret`` (closes
the innermost open path), ``arm`` (its first execution ends the boot phase).
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import IN_CHECKOUT, REPO

__all__ = ["PROBE_KINDS", "PLUGIN_DIR", "BUILD_COMMAND", "PluginUnavailable",
           "PluginResultError", "plugin_library", "write_probe_file",
           "qemu_plugin_args", "read_plugin_result", "fault_return_sites"]

PROBE_KINDS = ("count", "entry", "event", "ret", "arm", "mark")
PHASES = ("boot", "workload")
PLUGIN_DIR = REPO / "qemu" / "plugin"       # its build/ is packaged into a wheel (setup.py)
BUILD_COMMAND = "make -C qemu/plugin"
RESULT_VERSION = 1


class PluginUnavailable(GdbfaultError):
    """The plugin is not built (or cannot be): the message names what is missing."""


class PluginResultError(GdbfaultError):
    """The plugin's result file is missing or not what the plugin writes."""


def _missing_parts(plugin_dir):
    """What stops the plugin from being built, as short phrases."""
    missing = []
    if not (plugin_dir / "build" / "include" / "qemu-plugin.h").is_file():
        missing.append("QEMU's qemu-plugin.h header (fetched from Debian's qemu "
                       "source package by qemu/plugin/fetch-header.sh)")
    if not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("a C compiler (apt-get install gcc)")
    return missing


def plugin_library(plugin_dir=None) -> Path:
    """Path of the built plugin, build/libfaultcount.so.

    Raises PluginUnavailable naming what is missing (header, compiler or the
    built library) and the command that builds it.
    """
    plugin_dir = Path(plugin_dir) if plugin_dir else PLUGIN_DIR
    lib = plugin_dir / "build" / "libfaultcount.so"
    if lib.is_file():
        return lib
    if not IN_CHECKOUT and plugin_dir == PLUGIN_DIR:
        raise PluginUnavailable("the QEMU plugin backend is unavailable: this installed gdbfault "
                                "was packaged without it",
                                f"build it in a checkout (`{BUILD_COMMAND}`), then rebuild the wheel")
    missing = _missing_parts(plugin_dir)
    if not missing:
        missing = [f"the built plugin {lib}"]
    raise PluginUnavailable("the QEMU plugin backend is unavailable: missing "
                            + "; ".join(missing),
                            f"build it with `{BUILD_COMMAND}`")


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


def _qemu_opt_escape(value):
    """QEMU option values escape a comma by doubling it."""
    return str(value).replace(",", ",,")


def qemu_plugin_args(library, probe_file, out_file) -> list:
    """QEMU arguments that load the plugin with this probe file and output file."""
    spec = ",".join([f"file={_qemu_opt_escape(Path(library).resolve())}",
                     f"probes={_qemu_opt_escape(Path(probe_file).resolve())}",
                     f"out={_qemu_opt_escape(Path(out_file).resolve())}"])
    return ["-plugin", spec]


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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PluginResultError(f"plugin result {path} is missing",
                                "the plugin writes it when QEMU exits; "
                                "was QEMU killed or did the plugin fail to load?") from None
    except OSError as err:
        raise PluginResultError(f"cannot read plugin result {path}: {err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise PluginResultError(f"plugin result {path} is not valid JSON ({err})",
                                "QEMU may have been killed while writing it") from None
    _check(isinstance(data, dict), path, "not a JSON object")
    _check(data.get("backend") == "plugin", path, "backend is not 'plugin'")
    _check(data.get("version") == RESULT_VERSION, path,
           f"version {data.get('version')!r}, expected {RESULT_VERSION}")
    hits = data.get("hits")
    _check(isinstance(hits, dict), path, "'hits' is not an object")
    for name, by_phase in hits.items():
        _check(isinstance(by_phase, dict)
               and all(_is_count(by_phase.get(ph)) for ph in PHASES),
               path, f"hits[{name!r}] lacks boot/workload counts")
    paths = data.get("paths")
    _check(isinstance(paths, list), path, "'paths' is not a list")
    for i, entry in enumerate(paths):
        _check(isinstance(entry, dict) and entry.get("phase") in PHASES
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


def fault_return_sites(kernel_elf, entry_symbol="page_fault",
                       callee="do_page_fault") -> list:
    """Addresses of the instructions right after each `call <callee>` in
    `entry_symbol` of an ELF kernel: where the fault handler returns to.

    Uses objdump (binutils). Raises GdbfaultError if none is found.
    """
    objdump = shutil.which("objdump")
    if not objdump:
        raise GdbfaultError("objdump is missing (apt-get install binutils)")
    proc = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(kernel_elf)],
                          capture_output=True, text=True, check=False)
    insns, current = [], None      # (address, text, symbol) in file order
    for line in proc.stdout.splitlines():
        header = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if header:
            current = header.group(1)
            continue
        insn = re.match(r"^\s*([0-9a-f]+):\s+(\S.*)$", line)
        if insn:
            insns.append((int(insn.group(1), 16), insn.group(2), current))
    sites = [insns[i + 1][0] for i, (_, text, sym) in enumerate(insns[:-1])
             if sym == entry_symbol and text.startswith("call")
             and f"<{callee}>" in text]
    if not sites:
        raise GdbfaultError(f"no `call {callee}` found in {entry_symbol} of "
                            f"{kernel_elf}", proc.stderr.strip() or None)
    return sites
