"""Kernel symbols: from an ELF's symbol table (pyelftools) or a System.map.

Real 2.x-era kernels come as a bzImage plus System.map with no DWARF, so
probes there go by address (`*0xc010de04`); ELF kernels with symbols let GDB
resolve names itself. Both give a `SymbolTable` mapping names to addresses.

One reader serves every user: `symbol_rows` gives nm-style `SymbolRow`s
(address, type letter, name; from an ELF also its size, its kind and, for
a file-local symbol, its source file) — `load_symbols` keeps names and
addresses, the kernel profile its text symbols in order, a live patch the
sizes and file-local names it links against.
"""
import functools
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from gdbfault.base.errors import GdbfaultError
from gdbfault.kernels.image import I386, X86_64
from gdbfault.base.userfiles import input_file, open_input, read_input_text

__all__ = ["SymbolTable", "SymbolRow", "load_symbols", "parse_system_map", "is_elf", "map_rows", "elf_rows",
           "symbol_rows", "map_to_elf", "CODE_LETTERS"]

_MAP_LINE = re.compile(r"^([0-9a-fA-F]{6,16})\s+([A-Za-z])\s+(\S+)")
# nm's type letters for code (text) symbols
CODE_LETTERS = "tT"


def is_elf(path):
    """Does a kernel file start with ELF's magic? (checked as a kernel image: a file, bounded)"""
    with open_input(path, "image", "kernel file") as f:
        return f.read(4) == b"\x7fELF"


class SymbolRow(NamedTuple):
    """One symbol, as nm shows it, with what an ELF adds."""
    address: int
    letter: str                  # nm's type letter: T/t code, D/d data, A/a absolute, ... (capital: global)
    name: str
    size: int = 0                # bytes; 0 when unknown (System.map)
    kind: str = None             # ELF: "func", "object" or "other"; None from a System.map
    file: str = None             # ELF: the source file of a file-local symbol

    @property
    def is_global(self):
        return self.letter.isupper()


@dataclass
class SymbolTable:
    """Function and data symbols of one kernel, and where they came from."""

    source: Path
    kind: str                  # "ELF symbol table" or "System.map" (reports say "KIND (SOURCE)")
    addresses: dict            # name -> address (first definition wins)

    def address(self, name):
        return self.addresses.get(name)

    @cached_property
    def arch(self):
        """X86_64 when the kernel's addresses need more than 32 bits (a System.map's 16 hex digits,
        text at ffffffff8...), else I386 (8 digits, c0000000 and up)."""
        return X86_64 if max(self.addresses.values(), default=0) >= 1 << 32 else I386

    def next_address(self, address):
        """The lowest symbol address above `address` (where a function starting there ends), or None."""
        return min((a for a in self.addresses.values() if a > address), default=None)

    def require(self, name, suggest=()):
        """The address of `name`, or a one-line error naming the source."""
        addr = self.addresses.get(name)
        if addr is None:
            known = [s for s in suggest if s in self.addresses]
            hint = f"known names there: {', '.join(known)}" if known else None
            raise GdbfaultError(f"symbol '{name}' not found in {self.kind} ({self.source})", hint)
        return addr


def map_rows(text, source="System.map"):
    """[SymbolRow] of System.map text (`c0101234 T do_page_fault`), in file order."""
    rows = []
    for line in text.splitlines():
        m = _MAP_LINE.match(line)
        if m:
            rows.append(SymbolRow(int(m.group(1), 16), m.group(2), m.group(3)))
    if not rows:
        raise GdbfaultError(f"no symbols found in {source}: not a System.map?")
    return rows


def elf_rows(path):
    """[SymbolRow] of an ELF's .symtab, in table order, typed the way nm types
    them: T/t code, D/d other sections, A/a absolute (capital = global).
    Undefined, file and section symbols are left out (a file symbol names the
    source file of the local symbols after it)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    rows = []
    try:
        with open_input(path, "image", "kernel file") as f:
            elf = ELFFile(f)
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None:
                return rows
            code = {i for i, s in enumerate(elf.iter_sections()) if s["sh_flags"] & 0x4}   # SHF_EXECINSTR
            source_file = None
            for sym in symtab.iter_symbols():
                shndx, typ = sym["st_shndx"], sym["st_info"]["type"]
                if typ == "STT_FILE":
                    source_file = sym.name
                    continue
                if not sym.name or shndx == "SHN_UNDEF" or typ == "STT_SECTION":
                    continue
                letter = "t" if shndx in code else "d" if isinstance(shndx, int) else "a"
                is_global = sym["st_info"]["bind"] != "STB_LOCAL"
                if is_global:
                    letter = letter.upper()
                rows.append(SymbolRow(sym["st_value"], letter, sym.name, sym["st_size"],
                                      {"STT_FUNC": "func", "STT_OBJECT": "object"}.get(typ, "other"),
                                      None if is_global else source_file))
    except ELFError as exc:
        raise GdbfaultError(f"cannot read ELF symbols from {path}: {exc}")
    return rows


def symbol_rows(kernel, system_map=None):
    """(rows, source): the System.map's rows if given, else the ELF's (none for a compressed image)."""
    if system_map:
        system_map = Path(system_map)
        return map_rows(read_input_text(system_map, "system_map", errors="replace"), system_map), system_map
    kernel = input_file(kernel, "image", "kernel file")
    return (elf_rows(kernel) if is_elf(kernel) else []), kernel


def _name_table(rows, skip):
    table = {}
    for row in rows:
        if row.letter not in skip:
            table.setdefault(row.name, row.address)     # the first definition wins
    return table


def parse_system_map(text, source="System.map"):
    """name -> address from System.map text (absolute and undefined symbols left out)."""
    return _name_table(map_rows(text, source), "aAU")


def _identity(path):
    """What tells one version of a file from another: its path, size and modification time."""
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


def load_symbols(kernel, system_map=None):
    """Symbols for a kernel: the System.map if given, else the ELF's .symtab. Read once per
    version of the files (a compare or check resolves each run before running it; a
    distribution kernel's map has ~100,000 lines)."""
    return _load_symbols(kernel, system_map, _identity(kernel), _identity(system_map))


@functools.lru_cache(maxsize=8)
def _load_symbols(kernel, system_map, *_versions):
    rows, source = symbol_rows(kernel, system_map)
    if system_map:
        return SymbolTable(source, "System.map", _name_table(rows, "aAU"))
    if not is_elf(kernel):
        raise GdbfaultError(f"{kernel} has no ELF symbol table (a compressed image?)",
                            "pass its System.map with --system-map")
    table = _name_table(rows, "")
    if not table:
        raise GdbfaultError(f"{kernel} has no symbols (stripped?)", "pass its System.map with --system-map")
    return SymbolTable(kernel, "ELF symbol table", table)


# The last function of a System.map has no known end: GDB gets this much room for its name.
_LAST_FUNCTION_ROOM = 0x1000


def map_to_elf(system_map, out, arch=I386):
    """An ELF holding only the code symbols of a System.map, sized to the next one, in a section
    that occupies no bytes in the file: `file OUT` then gives GDB names for a kernel that has no
    ELF of its own (x/i, info symbol, break *do_page_fault, backtraces), its code read from the
    target. Needs binutils (as, ld)."""
    import shutil
    import subprocess
    import tempfile
    rows = sorted({(r.address, r.name) for r in map_rows(Path(system_map).read_text(errors="replace"), str(system_map))
                   if r.letter in CODE_LETTERS})
    if not rows:
        raise GdbfaultError(f"{system_map} has no code symbols")
    if not (shutil.which("as") and shutil.which("ld")):
        raise GdbfaultError("naming a System.map's symbols in GDB needs binutils (as, ld)",
                            "apt-get install binutils")
    base = rows[0][0]
    asm = ['.section .ktext,"ax",@nobits']
    seen = {}
    for i, (address, name) in enumerate(rows):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:               # file-local functions of one name: the later ones as NAME.N
            name = f"{name}.{seen[name] - 1}"
        asm += [f".org {address - base:#x}", f'.globl "{name}"', f'.type "{name}",@function', f'"{name}":']
        end = rows[i + 1][0] if i + 1 < len(rows) and rows[i + 1][0] > address else None
        if end is None and i + 1 == len(rows):
            end = address + _LAST_FUNCTION_ROOM
        if end is not None:
            asm.append(f'.size "{name}", {end - address:#x}')
    asm.append(f".org {rows[-1][0] - base + _LAST_FUNCTION_ROOM:#x}")
    bits = ("--64", "elf_x86_64") if arch == X86_64 else ("--32", "elf_i386")
    with tempfile.TemporaryDirectory(prefix="gdbfault-map-") as work:
        source, obj = Path(work) / "map.s", Path(work) / "map.o"
        source.write_text("\n".join(asm) + "\n")
        for cmd in (["as", bits[0], "-o", str(obj), str(source)],
                    ["ld", "-m", bits[1], f"--section-start=.ktext={base:#x}", "-e", "0", "-o", str(out), str(obj)]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise GdbfaultError(f"{cmd[0]} could not turn {system_map} into symbols for GDB: "
                                    f"{(done.stderr or done.stdout).strip()[-200:]}")
    return Path(out)

