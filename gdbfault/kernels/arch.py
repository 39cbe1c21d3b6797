"""Which architecture a run is for, and whether its parts fit together: `RunArch`, `resolve_arch`.

A run has four parts that each have an architecture: the kernel image
(image.py: a bzImage's xloadflags, an ELF's class and machine), its
symbols (symbols.py: a System.map's addresses need 16 hex digits on
x86_64, 8 on i386), the workload (an i386 `int $0x80` program runs on
both, an x86_64 one only on an x86_64 kernel) and the QEMU system emulator
(machine/qemu.py: qemu-system-i386 emulates only 32-bit CPUs; an x86_64
kernel needs qemu-system-x86_64, which runs i386 kernels too). A mismatch
would boot nothing useful — qemu-system-i386 given an x86_64 kernel prints
nothing and runs until the timeout — so it is refused here, in one line,
before anything boots.

Two things follow the emulator rather than the kernel: the CPU model pinned
(machine/qemu.CPU_MODELS) and the width of the registers its gdbstub sends
(GDB's architecture). The kernel's own width decides how wide a return
address on its stack is (`word_size`).
"""
from dataclasses import dataclass

from gdbfault.base.errors import GdbfaultError
from gdbfault.kernels.image import I386, X86_64
from gdbfault.machine.qemu import CPU_MODELS, EMULATORS, emulator_target

__all__ = ["RunArch", "resolve_arch", "emulator_runs", "ARCHES"]

ARCHES = (I386, X86_64)
# What each emulator's CPUs can run: a 64-bit CPU runs 32-bit kernels too.
_RUNS = {I386: (I386,), X86_64: (I386, X86_64)}
_DIGITS = {I386: "8-hex-digit", X86_64: "16-hex-digit"}


@dataclass(frozen=True)
class RunArch:
    """The architectures of one run's parts, checked to fit."""

    kernel: str                  # I386 or X86_64
    qemu: str                    # the QEMU binary that runs it
    target: str                  # the architecture it emulates (its gdbstub's registers)
    cpu: str = None              # the CPU model pinned (-cpu); None for an emulator gdbfault has none for
    workload: str = None         # the workload's ABI (I386 or X86_64); None without a workload

    @property
    def word_size(self):
        """Bytes of an address on the kernel's stack (a return address)."""
        return 8 if self.kernel == X86_64 else 4

    @property
    def ia32_emulation(self):
        """An i386 workload on an x86_64 kernel: it runs through the kernel's IA32 emulation."""
        return self.kernel == X86_64 and self.workload == I386


def emulator_runs(target, kernel_arch):
    """Can an emulator of `target` run a kernel of `kernel_arch`?"""
    return kernel_arch in _RUNS.get(target, ())


def resolve_arch(kernel, kernel_arch, symbols=None, workload=None, workload_arch=None, qemu=None):
    """The RunArch of a run, or a one-line GdbfaultError naming what does not fit.

    kernel: the kernel file (named in messages); kernel_arch: its image's (None: i386, as every
    image without a 64-bit mark is); symbols: its kernels.symbols.SymbolTable (a System.map is
    checked against the image); workload, workload_arch: the workload file and its ABI; qemu: the
    emulator asked for (None: the one the kernel needs).
    """
    arch = kernel_arch or I386
    name = getattr(kernel, "name", kernel)
    if symbols is not None and symbols.kind == "System.map" and symbols.arch != arch:
        raise GdbfaultError(f"System.map {symbols.source} is for an {symbols.arch} kernel "
                            f"({_DIGITS[symbols.arch]} addresses) but {name} is an {arch} kernel",
                            "give this kernel's own System.map")
    if workload_arch is not None and workload_arch not in _RUNS[arch]:
        raise GdbfaultError(f"the workload {getattr(workload, 'name', workload)} is an {workload_arch} program; "
                            f"the {arch} kernel {name} cannot run it",
                            "use an i386 workload (--workload-abi i386), or an x86_64 kernel")
    binary = qemu or EMULATORS[arch]
    target = emulator_target(binary)
    if not emulator_runs(target, arch):
        need = EMULATORS[arch]
        raise GdbfaultError(f"{name} is an {arch} kernel, which {binary} ({target}) cannot run: it would "
                            f"boot nothing and wait for --timeout", f"use {need} (drop --qemu-binary, or give "
                                                                    f"--qemu-binary {need})")
    return RunArch(kernel=arch, qemu=binary, target=target, cpu=CPU_MODELS.get(target), workload=workload_arch)
