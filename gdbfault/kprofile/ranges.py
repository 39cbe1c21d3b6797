"""What the kernel-profile plugin is told: the kernel's functions as address ranges, and where its windows open.

A function runs from its symbol to the next symbol at a higher address
(readprofile's rule); names sharing an address are aliases. A function
whose name is a trap, interrupt or system-call vector starts a new frame on
the plugin's shadow call stack when a block enters it without a call. The
ranges file (format in qemu/plugin/kprofile.c) also lists the kernel's
user-access sites (instructions allowed to fault) and the phase marks: the
workload's entry (the boot is over) and its two rdtsc (the measured loop).
"""
import re
import struct
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import open_input
from gdbfault.kernels.symbols import CODE_LETTERS, is_elf, symbol_rows

__all__ = ["ENTRY_NAME", "kernel_functions", "kernel_base", "workload_marks", "uaccess_sites", "write_ranges",
           "plugin_options"]

# Trap, interrupt and system-call vectors: a block starting one of these that
# no direct call or jump led to is an exception/interrupt entry (a new frame
# on the shadow stack). Lab kernel and 2.x names, then modern Linux's.
ENTRY_NAME = re.compile(
    r"^(system_call|page_fault|divide_error|debug|nmi|int3|overflow|bounds|invalid_op|"
    r"device_not_available|double_fault|coprocessor_segment_overrun|invalid_TSS|"
    r"segment_not_present|stack_segment|general_protection|spurious_interrupt_bug|"
    r"coprocessor_error|alignment_check|machine_check|simd_coprocessor_error|reserved_exception|"
    r"irq\d+_interrupt|IRQ\w*interrupt|lcall7|signal_return_sys|"
    r"asm_exc_\w+|asm_sysvec_\w+|asm_common_interrupt|asm_spurious_interrupt|"
    r"entry_INT80_32|entry_SYSENTER_32|__begin_SYSENTER_singlestep_region|"
    r"irq_entries_start|spurious_entries_start|common_interrupt|handle_exception|"
    # x86_64: native syscall, the IA32 entries (int $0x80 is an IDT stub from the
    # 2023 fixes on, entry_INT80_compat before), and the NMI/debug stacks' own entries
    r"entry_SYSCALL_64|entry_SYSCALL_compat|entry_SYSENTER_compat|entry_INT80_compat|"
    r"asm_int80_emulation)$")

def _name_rank(letter, name):
    """Which of several names at one address to show: plain global names first; of an x86_64
    kernel's system-call aliases, the native `__x64_sys_*` before `__ia32_sys_*` (one code)."""
    return (name.startswith("_"), letter.islower(), name.startswith("."), name.startswith("__ia32_"), name)


def kernel_functions(kernel, system_map=None):
    """[{symbol, address, end, aliases, entry}] of the kernel's code, sorted.

    From System.map when given (a kernel the user brings), else the ELF's
    .symtab. A function runs from its symbol to the next symbol at a higher
    address (readprofile's rule); names sharing an address are aliases.
    """
    rows, source = symbol_rows(kernel, system_map)
    # Weak and absolute symbols do not start a function (nor end the one before).
    rows = [r[:3] for r in rows if r.letter not in ("aAUwWvV" if system_map else "aAC")]
    if not system_map and not any(t in CODE_LETTERS for _, t, _ in rows):
        raise GdbfaultError(f"{kernel} has no function symbols (stripped or compressed?)",
                            "pass its System.map with --system-map")
    rows.sort()
    addresses = sorted({a for a, _, _ in rows})
    next_address = {a: b for a, b in zip(addresses, addresses[1:])}
    by_address = {}
    for address, letter, name in rows:
        if letter in CODE_LETTERS:
            by_address.setdefault(address, []).append((letter, name))
    funcs = []
    for address in sorted(by_address):
        end = next_address.get(address)
        if end is None:
            continue                     # the last symbol has no known end
        names = sorted(by_address[address], key=lambda ln: _name_rank(*ln))
        symbol = names[0][1]
        aliases = [n for _, n in names[1:]]
        funcs.append({"symbol": symbol, "address": address, "end": end, "aliases": aliases,
                      "entry": any(ENTRY_NAME.match(n) for _, n in names)})
    if not funcs:
        raise GdbfaultError(f"no function symbols with a known end in {source}")
    return funcs


def kernel_base(funcs):
    """Where kernel addresses begin: the lowest function rounded down to 256 MiB
    (0xc0000000 for a 3G/1G i386 kernel, 0xffffffff80000000 for x86_64; user space lies
    below). A base above 4 GiB also tells the plugin to decode 64-bit code (REX prefixes)."""
    return min(f["address"] for f in funcs) & ~0x0FFFFFFF


def uaccess_sites(kernel, funcs):
    """Kernel instructions allowed to fault (the ELF's __ex_table), [address].

    The plugin counts blocks holding one per instruction, so a fault there
    (a bad user pointer) still leaves exact counts. Absolute 2.x-style
    entries (insn, fixup) and relative 6.x-style ones (insn, fixup, data as
    offsets) are recognised; anything else (or a System.map-only kernel)
    gives none, and such faults are reported as inexact blocks.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    if not Path(kernel).is_file() or not is_elf(kernel):
        return []
    lo, hi = min(f["address"] for f in funcs), max(f["end"] for f in funcs)
    try:
        with open_input(kernel, "image") as fh:
            section = ELFFile(fh).get_section_by_name("__ex_table")
            if section is None:
                return []
            data, start = section.data(), section["sh_addr"]
    except ELFError:
        return []
    words = struct.unpack(f"<{len(data) // 4}I", data[:len(data) // 4 * 4])
    absolute = list(words[0::2])
    if absolute and len(words) % 2 == 0 and all(lo <= a < hi for a in absolute):
        return sorted(set(absolute))
    signed = struct.unpack(f"<{len(data) // 4}i", data[:len(data) // 4 * 4])
    # offsets from each entry's own address, which wraps at the kernel's address width
    mask = (1 << 64) - 1 if start >= 1 << 32 else 0xFFFFFFFF
    relative = [(start + 12 * i + signed[3 * i]) & mask for i in range(len(signed) // 3)]
    if relative and len(signed) % 3 == 0 and all(lo <= a < hi for a in relative):
        return sorted(set(relative))
    return []


def write_ranges(path, funcs, base, marks, uaccess=()):
    """The plugin's ranges file (format in kprofile.c)."""
    lines = ["# gdbfault kernel profile ranges", f"base {base:#x}"]
    lines += [f"uaccess {a:#x}" for a in uaccess]
    for f in funcs:
        if f["address"] < base:
            continue
        name = re.sub(r"[\s#]", "_", f["symbol"])[:500]
        lines.append(f"func {f['address']:#x} {f['end']:#x} {int(f['entry'])} {name}")
    lines += [f"mark {addr:#x} {where}" for addr, where in marks]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def workload_marks(points):
    """The plugin's phase marks for a workload (kernels.workloads.WorkloadPoints): [(address,
    'before'|'after')]: its entry point (boot ends), then its two rdtsc in rt_main (the guest's
    measured loop: cycles = c1 - c0, each reading counting itself)."""
    loop = points.require("loop", "two rdtsc in rt_main: the profile's window is the guest's measured loop")
    return [(points.entry, "before"), (loop[0], "after"), (loop[1], "after")]


def plugin_options(chains=False, every_block=False):
    """The plugin's mode options (beside ranges= and out=), as a dict for machine.plugins.plugin_args.

    Flat (no option: per-function instructions and entries from inline
    counters only, ~1.05x an uninstrumented run), `chains=on` (a shadow call
    stack: inclusive costs and folded stacks, ~1.3x), and for checks
    `runs=off` (chains with a callback on every block: same results, slower).
    """
    if every_block:
        return {"chains": "on", "runs": "off"}
    return {"chains": "on"} if chains else {}
