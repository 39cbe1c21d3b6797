"""Reading a program's machine code: objdump's disassembly, parsed once.

Used where gdbfault needs fixed points of a binary rather than symbols: the
return site of a kernel's fault entry (the instruction after `call
do_page_fault` in `page_fault`, where the zero-stop backend closes a path)
and the workload's two `rdtsc` (the guest's measured loop, where the kernel
profile's window opens and closes). objdump comes with binutils.
"""
import re
import shutil
import subprocess
from typing import NamedTuple

from gdbfault.base.errors import GdbfaultError

__all__ = ["Instruction", "disassemble", "call_return_sites", "instructions_named"]

_HEADER = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S.*)$")


class Instruction(NamedTuple):
    address: int
    text: str            # mnemonic and operands as objdump prints them ("call c0101380 <do_page_fault>")
    function: str        # the symbol whose code holds it


def disassemble(elf, function=None):
    """[Instruction] of an ELF's code in file order (only `function`'s when given)."""
    objdump = shutil.which("objdump")
    if not objdump:
        raise GdbfaultError("objdump is missing (apt-get install binutils)")
    argv = [objdump, "-d", "--no-show-raw-insn"] + ([f"--disassemble={function}"] if function else [])
    proc = subprocess.run(argv + [str(elf)], capture_output=True, text=True, check=False)
    insns, current = [], None
    for line in proc.stdout.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            continue
        insn = _INSN.match(line)
        if insn and (function is None or current == function):
            insns.append(Instruction(int(insn.group(1), 16), insn.group(2), current))
    return insns


def call_return_sites(elf, caller, callee):
    """Addresses of the instructions right after each `call <callee>` in `caller`: where `callee`
    returns to. A one-line GdbfaultError when there is none."""
    insns = disassemble(elf)
    sites = [insns[i + 1].address for i, insn in enumerate(insns[:-1])
             if insn.function == caller and insn.text.startswith("call") and f"<{callee}>" in insn.text]
    if not sites:
        raise GdbfaultError(f"no `call {callee}` found in {caller} of {elf}")
    return sites


def instructions_named(elf, function, mnemonic):
    """Addresses of every `mnemonic` instruction in `function`, in order."""
    return [insn.address for insn in disassemble(elf, function)
            if insn.text.split(None, 1)[0] == mnemonic]
