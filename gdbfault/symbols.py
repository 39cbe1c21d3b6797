"""Kernel symbols: from an ELF's symbol table (pyelftools) or a System.map.

Real 2.x-era kernels come as a bzImage plus System.map with no DWARF, so
probes there go by address (`*0xc010de04`); ELF kernels with symbols let GDB
resolve names itself. Both give a `SymbolTable` mapping names to addresses.
"""
import re
from dataclasses import dataclass
from pathlib import Path

from gdbfault.errors import GdbfaultError

__all__ = ["SymbolTable", "load_symbols", "parse_system_map", "is_elf"]

_MAP_LINE = re.compile(r"^([0-9a-fA-F]{6,16})\s+([A-Za-z])\s+(\S+)")


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


@dataclass
class SymbolTable:
    """Function and data symbols of one kernel, and where they came from."""

    source: Path
    kind: str                  # "elf" or "system.map"
    addresses: dict            # name -> address (first definition wins)

    def address(self, name):
        return self.addresses.get(name)

    def require(self, name, suggest=()):
        """The address of `name`, or a one-line error naming the source."""
        addr = self.addresses.get(name)
        if addr is None:
            known = [s for s in suggest if s in self.addresses]
            hint = f"known names there: {', '.join(known)}" if known else None
            raise GdbfaultError(f"symbol '{name}' not found in {self.kind} ({self.source})", hint)
        return addr


def parse_system_map(text, source="System.map"):
    """name -> address from System.map text (`c0101234 T do_page_fault`)."""
    table = {}
    for line in text.splitlines():
        m = _MAP_LINE.match(line)
        if m and m.group(2) not in "aAU":
            table.setdefault(m.group(3), int(m.group(1), 16))
    if not table:
        raise GdbfaultError(f"no symbols found in {source}: not a System.map?")
    return table


def _elf_symbols(path):
    from elftools.elf.elffile import ELFFile
    from elftools.common.exceptions import ELFError
    table = {}
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None:
                return table
            for sym in symtab.iter_symbols():
                if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") \
                        and sym["st_shndx"] != "SHN_UNDEF":
                    table.setdefault(sym.name, sym["st_value"])
    except ELFError as exc:
        raise GdbfaultError(f"cannot read ELF symbols from {path}: {exc}")
    return table


def load_symbols(kernel, system_map=None):
    """Symbols for a kernel: the System.map if given, else the ELF's .symtab."""
    if system_map:
        system_map = Path(system_map)
        if not system_map.is_file():
            raise GdbfaultError(f"System.map not found: {system_map}")
        return SymbolTable(system_map, "System.map",
                           parse_system_map(system_map.read_text(errors="replace"), system_map))
    kernel = Path(kernel)
    if not kernel.is_file():
        raise GdbfaultError(f"kernel file not found: {kernel}")
    if not is_elf(kernel):
        raise GdbfaultError(f"{kernel} has no ELF symbol table (a compressed image?)",
                            "pass its System.map with --system-map")
    table = _elf_symbols(kernel)
    if not table:
        raise GdbfaultError(f"{kernel} has no symbols (stripped?)", "pass its System.map with --system-map")
    return SymbolTable(kernel, "ELF symbol table", table)
