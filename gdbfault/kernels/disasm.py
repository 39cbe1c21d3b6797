"""Reading a program's machine code: objdump's disassembly, parsed once.

Used where gdbfault needs fixed points of a binary rather than symbols: the
return site of a kernel's fault entry (the instruction after `call
do_page_fault` in `page_fault`, or after `call exc_page_fault` in an x86_64
kernel's `asm_exc_page_fault`: where the zero-stop backend closes a path)
and the workload's two `rdtsc` (the guest's measured loop, where the kernel
profile's window opens and closes). Code is found by symbol name in an ELF
with symbols, or by address range (from a System.map) in a stripped one such
as the vmlinux inside a bzImage. objdump comes with binutils.
"""
import re
import shutil
import subprocess
from typing import NamedTuple

from gdbfault.base.errors import GdbfaultError

__all__ = ["Instruction", "disassemble", "direct_call_return_sites", "instructions_named"]

_HEADER = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S.*)$")
# A direct call and its target: "call   c0101380 <do_page_fault>", "call   0xffffffff81a48560"
_DIRECT_CALL = re.compile(r"^call\w*\s+(?:0x)?([0-9a-f]+)\b")


class Instruction(NamedTuple):
    address: int
    text: str            # mnemonic and operands as objdump prints them ("call c0101380 <do_page_fault>")
    function: str        # the symbol whose code holds it


def disassemble(elf, function=None, start=None, stop=None):
    """[Instruction] of an ELF's code in file order (only `function`'s when given; only the
    addresses from `start` to `stop` when given)."""
    objdump = shutil.which("objdump")
    if not objdump:
        raise GdbfaultError("objdump is missing (apt-get install binutils)")
    argv = [objdump, "-d", "--no-show-raw-insn"] + ([f"--disassemble={function}"] if function else [])
    if start is not None:
        argv += [f"--start-address={start:#x}", f"--stop-address={stop:#x}"]
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


def direct_call_return_sites(elf, start, stop, target):
    """Addresses of the instructions right after each direct call to address `target` in the
    code from `start` to `stop` (symbols not needed): where `target` returns to."""
    # (a few bytes past `stop`: a call at the very end still has its next instruction)
    insns = disassemble(elf, start=start, stop=stop + 16)
    return [after.address for insn, after in zip(insns, insns[1:])
            if insn.address < stop and (call := _DIRECT_CALL.match(insn.text))
            and int(call.group(1), 16) == target]


def instructions_named(elf, function, mnemonic):
    """Addresses of every `mnemonic` instruction in `function`, in order."""
    return [insn.address for insn in disassemble(elf, function)
            if insn.text.split(None, 1)[0] == mnemonic]
