"""Where the project's own parts live: lab kernels, workloads, gdbscripts, plugin.

Two places, one layout. In a checkout (and an editable install) they are
where `make build` leaves them (qemu/*/build/, gdbscripts/). A wheel (`pip
install`, `pipx install`) carries copies of those build outputs inside the
package as gdbfault/_data/, laid out the same way (setup.py's build hook
makes them), so an installed gdbfault needs no checkout.
"""
import os
from pathlib import Path

from gdbfault.base.errors import GdbfaultError

__all__ = ["REPO", "IN_CHECKOUT", "GDBSCRIPTS", "lab_kernel", "workload_binary",
           "WORKLOADS", "VARIANTS", "WORKLOAD_ABIS", "cache_dir"]

_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE.parent
# A checkout is recognised by the lab kernel's sources; site-packages has none.
IN_CHECKOUT = (_CHECKOUT / "qemu" / "kernel" / "Makefile").is_file()
# The root both layouts share: gdbscripts/, qemu/kernel/build/, qemu/workloads/build/, ...
REPO = _CHECKOUT if IN_CHECKOUT else _PACKAGE / "_data"
GDBSCRIPTS = REPO / "gdbscripts"
# What to tell a user whose build output is missing.
_REBUILD = ("run `make setup` (or `make {target}`)" if IN_CHECKOUT else
            "this installed gdbfault was packaged without it: rebuild the wheel from a "
            "checkout after `make build`")
WORKLOADS = ("mprotect", "demand", "efault", "mixed")
# The system-call ABIs the built-in workloads are built for: i386 (`int $0x80`; runs on
# i386 kernels and, through their IA32 emulation, on x86_64 ones) and x86_64 (`syscall`).
WORKLOAD_ABIS = ("i386", "x86_64")


def _extra_variants():
    """Experiment builds beyond vanilla and patched (e.g. "broken", for the
    check tests): the folders of qemu/kernel/variants/ in a checkout, the
    kernels it carries in an installed package."""
    if IN_CHECKOUT:
        names = {p.name for p in (REPO / "qemu" / "kernel" / "variants").glob("*") if p.is_dir()}
    else:
        names = {p.parent.name for p in (REPO / "qemu" / "kernel" / "build").glob("*/kernel.elf")}
    return tuple(sorted(names - {"vanilla", "patched"}))


# vanilla (1997 order), patched (the seed's change), then the experiments.
VARIANTS = ("vanilla", "patched") + _extra_variants()


def lab_kernel(variant):
    """(kernel.elf, System.map) of a built lab kernel variant."""
    if variant not in VARIANTS:
        raise GdbfaultError(f"unknown lab kernel variant '{variant}'",
                            f"choose one of: {', '.join(VARIANTS)}")
    build = REPO / "qemu" / "kernel" / "build" / variant
    elf = build / "kernel.elf"
    if not elf.is_file():
        raise GdbfaultError(f"lab kernel ({variant}) is not built: {elf} is missing",
                            _REBUILD.format(target="-C qemu/kernel"))
    return elf, build / "System.map"


def workload_binary(name, abi="i386"):
    """Path of a built guest workload, by name and ABI (WORKLOAD_ABIS)."""
    if name not in WORKLOADS:
        raise GdbfaultError(f"unknown workload '{name}'",
                            f"choose one of: {', '.join(WORKLOADS)}")
    if abi not in WORKLOAD_ABIS:
        raise GdbfaultError(f"unknown workload ABI '{abi}'", f"choose one of: {', '.join(WORKLOAD_ABIS)}")
    build = REPO / "qemu" / "workloads" / "build"
    path = (build if abi == "i386" else build / abi) / f"{name}.elf"
    if not path.is_file():
        raise GdbfaultError(f"workload '{name}' is not built: {path} is missing",
                            _REBUILD.format(target="-C qemu/workloads"))
    return path


def cache_dir():
    """gdbfault's cache ($XDG_CACHE_HOME/gdbfault, by default ~/.cache/gdbfault): fetched kernels
    (scripts/fetch-debian-kernel.sh) and what is derived from a kernel image once (its vmlinux)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gdbfault"
