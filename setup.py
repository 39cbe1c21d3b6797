"""Build hook: a wheel of gdbfault carries the parts that run outside Python.

`gdbfault attach --qemu` needs the lab kernels, the guest workloads and the
in-GDB probe engine, and `--backend plugin` needs the TCG plugin. In a
checkout they are used where `make build` leaves them; an installed package
has no checkout, so building a wheel (`pip wheel .`, `pip install .`,
`pipx install .`) first runs the builds (make, gcc -m32 — a no-op when they
are up to date) and copies their outputs into the package as
``gdbfault/_data/``, laid out as in the checkout (gdbfault/base/locations.py). The plugin
is optional: when it cannot be built the wheel ships without it and says so.
An editable install copies nothing: it runs from the checkout.
"""
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
QEMU = HERE / "qemu"


def _say(message):
    print(f"gdbfault build: {message}", file=sys.stderr)


def _make(directory, required):
    """Run make in a build directory; a required one that fails stops the build."""
    if not (directory / "Makefile").is_file() or not shutil.which("make"):
        return
    done = subprocess.run(["make", "-s", "-C", str(directory)], check=False)
    if done.returncode != 0:
        if required:
            raise SystemExit(f"gdbfault build: `make -C {directory}` failed; "
                             "run ./scripts/install-deps.sh, then build again")
        _say(f"`make -C {directory}` failed: the wheel ships without what it builds")


def _data_files():
    """{path inside gdbfault/_data: source file}. The layout is the checkout's
    own (gdbscripts/, qemu/*/build/), so gdbfault.locations finds both alike."""
    wanted = [HERE / "gdbscripts" / "faultprobe.py", HERE / "gdbscripts" / "faultcard.py"]   # (inspect's card)
    for elf in sorted((QEMU / "kernel" / "build").glob("*/kernel.elf")):
        wanted += [elf, elf.parent / "System.map"]
    wanted += sorted((QEMU / "workloads" / "build").glob("*.elf"))
    wanted += sorted((QEMU / "workloads" / "build" / "x86_64").glob("*.elf"))   # --workload-abi x86_64
    wanted += [p for p in [QEMU / "plugin" / "build" / "libfaultcount.so", QEMU / "plugin" / "build" / "libkprofile.so"]
               if p.is_file()]
    return {str(path.relative_to(HERE)): path for path in wanted}


class BuildWithGuestParts(build_py):
    """build_py, plus the built kernels, workloads, probe engine and plugin."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return                       # the checkout's own build outputs are used in place
        _make(QEMU / "workloads", required=True)
        _make(QEMU / "kernel", required=True)
        # The plugin needs QEMU's header (fetched once by qemu/plugin/fetch-header.sh).
        _make(QEMU / "plugin", required=False)
        files = _data_files()
        for needed in ("qemu/kernel/build/vanilla/kernel.elf",
                       "qemu/kernel/build/patched/kernel.elf",
                       "qemu/workloads/build/mprotect.elf"):
            if needed not in files:
                raise SystemExit(f"gdbfault build: {needed} was not built; run `make build` first")
        data = Path(self.build_lib) / "gdbfault" / "_data"
        shutil.rmtree(data, ignore_errors=True)
        for inside, source in files.items():
            target = data / inside
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        if "qemu/plugin/build/libfaultcount.so" not in files:
            _say("the TCG plugin is not built: this wheel has no --backend plugin")
        _say(f"packaged {len(files)} built files into gdbfault/_data")


class GuestPartsDistribution(Distribution):
    """A wheel that may carry the plugin (a host .so) is tagged for this platform.

    Decided from the plugin's source, not its build: the wheel's tag is fixed
    before build_py runs the plugin's make."""

    def has_ext_modules(self):
        return (QEMU / "plugin" / "faultcount.c").is_file()


setup(cmdclass={"build_py": BuildWithGuestParts}, distclass=GuestPartsDistribution)
