"""Which program runs as the guest's init: a built-in workload or the user's own.

`--workload NAME` picks one of the project's workloads (qemu/workloads/), in
the ABI `--workload-abi` names: i386 (`int $0x80`, the default: it runs on
i386 kernels and, through their IA32 emulation, on x86_64 ones) or x86_64
(`syscall`, x86_64 kernels only). `--workload FILE` runs the user's own
program instead. It must be a static ELF executable (no dynamic loader, no
shared libraries: the guest root holds nothing but /init and /dev/console),
i386 or x86_64, using Linux's system calls; kernels/arch.py checks that the
kernel can run it. Its counts are reported as they are; they are checked against
the guest (✓/✗) only when it prints a `GDBFAULT-RESULT {json}` line, the
format in README.md ("Make your own workload checkable").
"""
from dataclasses import dataclass
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import WORKLOADS, workload_binary
from gdbfault.base.userfiles import input_file, open_input
from gdbfault.kernels.disasm import instructions_named
from gdbfault.kernels.image import I386, X86_64

__all__ = ["workload_file", "is_own_workload", "check_static_program", "elf_entry", "WorkloadPoints",
           "workload_points"]

# (ELF class, machine) of the programs a guest can run as init -> their ABI
_ABI = {("ELFCLASS32", "EM_386"): I386, ("ELFCLASS64", "EM_X86_64"): X86_64}


def elf_entry(path):
    """The entry point of an ELF file (the workload's first user instruction)."""
    from elftools.elf.elffile import ELFFile
    with open_input(path, "workload") as f:
        return ELFFile(f).header["e_entry"]


def is_own_workload(value):
    """True when --workload names a file rather than a built-in workload."""
    return bool(value) and value not in WORKLOADS


def check_static_program(path):
    """The ABI (I386 or X86_64) of `path`, a static ELF executable; else a one-line error."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open_input(path, "workload") as f:
            elf = ELFFile(f)
            header = elf.header
            kinds = {seg["p_type"] for seg in elf.iter_segments()}
    except (ELFError, OSError) as exc:
        raise GdbfaultError(f"workload {path} is not an ELF file ({exc})",
                            "give a static i386 or x86_64 ELF executable")
    abi = _ABI.get((header["e_ident"]["EI_CLASS"], header["e_machine"]))
    if abi is None:
        raise GdbfaultError(f"workload {path} is neither an i386 nor an x86_64 program "
                            f"({header['e_ident']['EI_CLASS']}, {header['e_machine']})",
                            "build it with gcc -m32 -static (or -m64 for an x86_64 kernel)")
    if header["e_type"] != "ET_EXEC":
        raise GdbfaultError(f"workload {path} is not a plain executable ({header['e_type']})",
                            "link it with -static -no-pie")
    if "PT_INTERP" in kinds or "PT_DYNAMIC" in kinds:
        raise GdbfaultError(f"workload {path} is dynamically linked: the guest has no shared libraries",
                            "link it with -static")
    return abi


def workload_file(value, abi=None):
    """(the ELF file that runs as init, its ABI) for --workload VALUE (a name or a path) and
    --workload-abi `abi` (None: i386 for a built-in workload, the file's own for a file)."""
    if not is_own_workload(value):
        return workload_binary(value, abi or I386), abi or I386
    path = Path(value)
    if not path.exists():
        raise GdbfaultError(f"unknown workload '{value}': neither a built-in workload nor a file",
                            f"built-in: {', '.join(WORKLOADS)}; or give a static i386 or x86_64 ELF file")
    input_file(path, "workload")
    own = check_static_program(path)
    if abi is not None and abi != own:
        raise GdbfaultError(f"--workload-abi {abi} does not fit the workload {path}: it is an {own} program",
                            "drop --workload-abi (a file brings its own ABI)")
    return path, own


@dataclass(frozen=True)
class WorkloadPoints:
    """Fixed points of a workload binary (qemu/workloads/rt.c, driver.c), by address."""

    entry: int                 # its first instruction: the boot is over
    loop: tuple = ()           # the two rdtsc of rt_main around the measured loop; () when absent
    mark: int = None           # gdbfault_mark(): called once after `mark=N` iterations (a live patch's moment)
    end: int = None            # rt_finish: after the measured loop, before the result line

    def require(self, what, why):
        """The point `what` ("mark", "end", "loop"), or a one-line error: the workload lacks it."""
        value = getattr(self, what)
        if not value:
            raise GdbfaultError(f"the workload has no {what} point ({why})",
                                "rebuild it (make build), or use a built-in workload")
        return value


def workload_points(elf):
    """The WorkloadPoints of a workload ELF: from its symbols and its rt_main's two rdtsc."""
    from elftools.elf.elffile import ELFFile
    with open_input(elf, "workload") as f:
        elf_file = ELFFile(f)
        entry = elf_file.header["e_entry"]
        symtab = elf_file.get_section_by_name(".symtab")
        syms = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name} if symtab else {}
    loop = tuple(instructions_named(elf, "rt_main", "rdtsc")) if "rt_main" in syms else ()
    return WorkloadPoints(entry, loop if len(loop) == 2 else (), syms.get("gdbfault_mark"), syms.get("rt_finish"))
