"""gdbfault's QEMU TCG plugins (qemu/plugin/): finding a built one, and the `-plugin` argument that loads it.

Two plugins ship: `faultcount` (the zero-stop backend: probe counts and
fault-path costs) and `kprofile` (the kernel profile). Both are loaded with
`-plugin file=LIB,key=value,...`; what they read and write is their users'
business (probing/plugin_probes.py, kprofile/). Without QEMU's plugin header
(fetched by qemu/plugin/fetch-header.sh) they cannot be built, and the GDB
backend still works: `plugin_library` then says what is missing.
"""
import json
import shutil
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import IN_CHECKOUT, REPO
from gdbfault.base.userfiles import read_input_text
from gdbfault.machine.qemu import qemu_opt_escape

__all__ = ["PLUGIN_DIR", "BUILD_COMMAND", "PLUGINS", "PluginUnavailable", "PluginResultError",
           "plugin_library", "plugin_args", "read_plugin_json"]

PLUGIN_DIR = REPO / "qemu" / "plugin"       # its build/ is packaged into a wheel (setup.py)
BUILD_COMMAND = "make -C qemu/plugin"
# plugin name -> what it is called in messages
PLUGINS = {"faultcount": "the QEMU plugin backend", "kprofile": "the kernel-profile plugin"}


class PluginUnavailable(GdbfaultError):
    """A plugin is not built (or cannot be): the message names what is missing."""


class PluginResultError(GdbfaultError):
    """A plugin's result file is missing or not what the plugin writes."""


def _missing_parts(plugin_dir):
    """What stops the plugins from being built, as short phrases."""
    missing = []
    if not (plugin_dir / "build" / "include" / "qemu-plugin.h").is_file():
        missing.append("QEMU's qemu-plugin.h header (fetched from Debian's qemu "
                       "source package by qemu/plugin/fetch-header.sh)")
    if not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("a C compiler (apt-get install gcc)")
    return missing


def plugin_library(name="faultcount", plugin_dir=None) -> Path:
    """Path of a built plugin, build/lib<name>.so.

    Raises PluginUnavailable naming what is missing (header, compiler or the
    built library) and the command that builds it.
    """
    what = PLUGINS[name]
    plugin_dir = Path(plugin_dir) if plugin_dir else PLUGIN_DIR
    lib = plugin_dir / "build" / f"lib{name}.so"
    if lib.is_file():
        return lib
    if not IN_CHECKOUT and plugin_dir == PLUGIN_DIR:
        raise PluginUnavailable(f"{what} is unavailable: this installed gdbfault was packaged without it",
                                f"build it in a checkout (`{BUILD_COMMAND}`), then rebuild the wheel")
    missing = _missing_parts(plugin_dir) or [f"the built plugin {lib}"]
    raise PluginUnavailable(f"{what} is unavailable: missing " + "; ".join(missing),
                            f"build it with `{BUILD_COMMAND}`")


def plugin_args(library, **options) -> list:
    """QEMU arguments that load `library` with its options (file paths made absolute, commas escaped)."""
    words = [f"file={qemu_opt_escape(Path(library).resolve())}"]
    for key, value in options.items():
        if isinstance(value, Path):
            value = value.resolve()
        words.append(f"{key}={qemu_opt_escape(value)}")
    return ["-plugin", ",".join(words)]


def read_plugin_json(path, what):
    """A plugin's JSON result as a dict; PluginResultError when it is missing or not JSON.
    (`what` names it in the message: "plugin result", "kernel-profile result".)"""
    path = Path(path)
    if not path.exists():
        raise PluginResultError(f"{what} {path} is missing",
                                "the plugin writes it when QEMU exits; "
                                "was QEMU killed or did the plugin fail to load?")
    try:
        text = read_input_text(path, "internal", what)
    except GdbfaultError as err:
        raise PluginResultError(str(err)) from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise PluginResultError(f"{what} {path} is not valid JSON ({err})",
                                "QEMU may have been killed while writing it") from None
    if not isinstance(data, dict):
        raise PluginResultError(f"{what} {path} is malformed: not a JSON object")
    return data
