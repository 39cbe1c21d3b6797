"""Where the project's own parts live: lab kernels, workloads, gdbscripts.

Everything is found relative to this package, so an editable install and a
plain checkout (`python -m gdbfault`) behave the same.
"""
from pathlib import Path

from gdbfault.errors import GdbfaultError

__all__ = ["REPO", "GDBSCRIPTS", "lab_kernel", "workload_binary",
           "WORKLOADS", "VARIANTS", "PROFILE_DIR"]

REPO = Path(__file__).resolve().parent.parent
GDBSCRIPTS = REPO / "gdbscripts"
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
WORKLOADS = ("mprotect", "demand", "efault", "mixed")
# vanilla (1997 order), patched (the seed's change), and any experiment
# builds under qemu/kernel/variants/ (e.g. "broken", for the check tests).
VARIANTS = ("vanilla", "patched") + tuple(sorted(
    p.name for p in (REPO / "qemu" / "kernel" / "variants").glob("*") if p.is_dir()))


def lab_kernel(variant):
    """(kernel.elf, System.map) of a built lab kernel variant."""
    if variant not in VARIANTS:
        raise GdbfaultError(f"unknown lab kernel variant '{variant}'",
                            f"choose one of: {', '.join(VARIANTS)}")
    build = REPO / "qemu" / "kernel" / "build" / variant
    elf = build / "kernel.elf"
    if not elf.is_file():
        raise GdbfaultError(f"lab kernel ({variant}) is not built: {elf} is missing",
                            "run `make setup` (or `make -C qemu/kernel`)")
    return elf, build / "System.map"


def workload_binary(name):
    """Path of a built guest workload, by name."""
    if name not in WORKLOADS:
        raise GdbfaultError(f"unknown workload '{name}'",
                            f"choose one of: {', '.join(WORKLOADS)}")
    path = REPO / "qemu" / "workloads" / "build" / f"{name}.elf"
    if not path.is_file():
        raise GdbfaultError(f"workload '{name}' is not built: {path} is missing",
                            "run `make setup` (or `make -C qemu/workloads`)")
    return path
