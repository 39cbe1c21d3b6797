"""faultcard: what one page fault looks like, read from inside GDB at the fault entry's first instruction.

Source it in a GDB stopped where a kernel's fault handler is entered (at
`do_page_fault`'s first instruction, as `gdbfault inspect` stops there):

    (gdb) source gdbscripts/faultcard.py
    (gdb) faultcard stack            # 2.x / lab kernel: do_page_fault(regs, error_code) on the stack
    (gdb) faultcard regparm OUT.json # i386 kernels built with regparm: eax, edx
    (gdb) faultcard sysv64           # x86_64: rdi, rsi

It prints (or writes to OUT.json) a JSON object: the error code and what it
says (user or kernel mode, read or write, page present or not, instruction
fetch), CR2, the faulting instruction's address (from the saved registers,
`pt_regs`) with its symbol and disassembly, and the kernel's call chain at the
fault: the entry function, the stub that called it and, for a fault taken in
kernel mode, the interrupted code and its callers (frame pointers on i386; on
x86_64, whose kernels keep no frame pointers, every kernel text address on
the stack, marked `?` as Linux's own unreliable traces are). Names come from
whatever symbols GDB has: the kernel's ELF or one made from its System.map,
and the workload's ELF (`add-symbol-file`) for user addresses.

The layout of `pt_regs` differs between kernel eras on i386 (2.x has no fs/gs,
2.6.20-29 fs only, later both); the first layout whose saved CS and EFLAGS
look real and agree with the error code's user bit is taken (said in
"layout").
"""
import json
import re

import gdb

__all__ = ["card", "LAYOUTS"]

# Word offsets in pt_regs: (ip, cs, flags, sp, bp) per layout.
LAYOUTS = {
    "i386 (fs, gs)": (12, 13, 14, 15, 5),
    "i386 (2.x)": (10, 11, 12, 13, 5),
    "i386 (fs)": (11, 12, 13, 14, 5),
    "x86_64": (16, 17, 18, 19, 4),
}
# Kernel stack sizes by word size: 8 KiB on i386 (2.x, the lab kernel), 16 KiB on x86_64.
_STACK = {4: 0x2000, 8: 0x4000}


def _reg(name):
    return int(gdb.parse_and_eval(f"${name}")) & ((1 << 64) - 1)


def _word(address, size):
    return int.from_bytes(bytes(gdb.selected_inferior().read_memory(address, size)), "little")


def symbol(address):
    """NAME+0xOFF of an address, from GDB's symbols; the bare address when none covers it."""
    try:
        out = gdb.execute(f"info symbol {address:#x}", to_string=True).strip()
    except gdb.error:
        return f"{address:#x}"
    m = re.match(r"(\S+)(?: \+ (\d+))? in section", out)
    if not m:
        return f"{address:#x}"
    return m.group(1) + (f"+{int(m.group(2)):#x}" if m.group(2) else "")


def instruction(address):
    """The instruction at an address, disassembled (or why it cannot be read)."""
    try:
        text = gdb.execute(f"x/i {address:#x}", to_string=True)
    except gdb.error as exc:
        return f"(unreadable: {exc})"
    return text.split(":", 1)[1].strip().replace("\t", " ") if ":" in text else text.strip()


def cr2(word):
    """CR2 from the gdbstub's system registers, else from the monitor's `info registers`."""
    try:
        return _reg("cr2") & ((1 << 8 * word) - 1)
    except gdb.error:
        text = gdb.execute("monitor info registers", to_string=True)
        m = re.search(r"CR2=([0-9a-fA-F]+)", text)
        return int(m.group(1), 16) if m else None


def decode(error_code):
    return {"user": bool(error_code & 4), "write": bool(error_code & 2), "present": bool(error_code & 1),
            "reserved_bit": bool(error_code & 8), "fetch": bool(error_code & 16)}


def _plausible(cs, flags, user):
    return 0 < cs < 0x10000 and (cs & 3 == 3) == user and flags & 2 and flags >> 22 == 0


def _saved(regs_at, word, user):
    """(layout name, {ip, cs, flags, sp, bp}) of the saved registers at `regs_at`."""
    names = ["x86_64"] if word == 8 else [n for n in LAYOUTS if n.startswith("i386")]
    for name in names:
        ip, cs, flags, sp, bp = (_word(regs_at + word * i, word) for i in LAYOUTS[name])
        if _plausible(cs, flags, user):
            return name, {"ip": ip, "cs": cs, "flags": flags, "sp": sp, "bp": bp}
    name = names[0]
    ip, cs, flags, sp, bp = (_word(regs_at + word * i, word) for i in LAYOUTS[name])
    return name + " (unverified)", {"ip": ip, "cs": cs, "flags": flags, "sp": sp, "bp": bp}


def _kernel_callers(saved, word, limit=24):
    """The interrupted kernel code's callers: the frame-pointer chain (i386), or every kernel text
    address on its stack, marked '?' (x86_64)."""
    out, size = [], _STACK[word]
    if word == 4:
        bp = saved["bp"]
        stack = bp & ~(size - 1)
        while len(out) < limit and stack <= bp < stack + size - 8:
            nxt, ret = _word(bp, 4), _word(bp + 4, 4)
            out.append(symbol(ret))
            bp = nxt
        return out
    sp = saved["sp"]
    top = (sp & ~(size - 1)) + size
    for at in range(sp, top, 8):
        value = _word(at, 8)
        if value >= 0xffffffff80000000:
            name = symbol(value)
            if not name.startswith("0x"):
                out.append("? " + name)
                if len(out) >= limit:
                    break
    return out


def card(args="stack"):
    """The card (module docstring) as a dict."""
    word = 8 if args == "sysv64" else 4
    pc, sp = _reg("pc"), _reg("sp")
    ret = _word(sp, word)
    if args == "stack":
        regs_at, error_code = _word(sp + 4, 4), _word(sp + 8, 4)
    elif args == "regparm":
        regs_at, error_code = _reg("eax") & 0xffffffff, _reg("edx") & 0xffffffff
    else:
        regs_at, error_code = _reg("rdi"), _reg("rsi")
    bits = decode(error_code)
    layout, saved = _saved(regs_at, word, bits["user"])
    chain = [symbol(pc), symbol(ret)]
    if not bits["user"]:
        chain.append("[interrupted] " + symbol(saved["ip"]))
        chain += _kernel_callers(saved, word)
    return {"pc": pc, "entry": symbol(pc), "error_code": error_code, **bits, "cr2": cr2(word),
            "ip": saved["ip"], "ip_symbol": symbol(saved["ip"]), "instruction": instruction(saved["ip"]),
            "cs": saved["cs"], "flags": saved["flags"], "regs_at": regs_at, "layout": layout, "chain": chain}


class FaultCardCommand(gdb.Command):
    """The fault at this entry as JSON: faultcard stack|regparm|sysv64 [OUT.json] (see the file's docstring)."""

    def __init__(self):
        super().__init__("faultcard", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if not argv or argv[0] not in ("stack", "regparm", "sysv64") or len(argv) > 2:
            raise gdb.GdbError("usage: faultcard stack|regparm|sysv64 [OUT.json]")
        text = json.dumps(card(argv[0]))
        if len(argv) == 2:
            with open(argv[1], "w") as f:
                f.write(text)
        else:
            print(text)


FaultCardCommand()
