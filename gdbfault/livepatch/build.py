"""Build a live patch: replacement functions linked against the running kernel.

`prepare_live_patch()` turns `--live-patch FILE` into a BuiltPatch: the bytes
to write into the kernel's live-patch area and the 5-byte `jmp rel32` to
write over each replaced function's entry (ftrace-style live patching; the
in-GDB side that writes them is `faultprobe livepatch` in
gdbscripts/faultprobe.py). FILE is either

- a patch for the lab kernel's sources: it is applied (`patch -p1 -F0`) to
  a copy of the running variant's tree, and each changed .c file is compiled
  twice, before and after, with the lab kernel's own flags (read from
  qemu/kernel/kbuild.mk) plus -ffunction-sections -fdata-sections. The
  replaced functions are those whose *code* changed: a function's sections
  (.text.F and its .text.unlikely.F cold part) differ in bytes or in what
  they relocate against. Hunk headers are not trusted: a hunk that only
  edits a comment replaces nothing, and a change to an inlined static helper
  replaces every function it was inlined into.
- a relocatable ELF object (.o): every global function defined in it replaces
  the running kernel's function of the same name.

Linking is `ld -T` with a generated script: the replacements (and the
constant data they use) go to the area; every undefined symbol becomes
`name = 0x…;` from the kernel's symbols; a section the replacement refers to
that holds an *unchanged* function or a variable of the kernel (a static
counter in fault.c, say) is placed at the running kernel's own address of
that symbol and not loaded, so the new code uses the kernel's copy, never a
fresh one.
"""
import json
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import REPO
from gdbfault.base.userfiles import input_file, open_input, read_input_bytes, read_input_text
from gdbfault.kernels.symbols import CODE_LETTERS, symbol_rows
from gdbfault.machine.guardian import watch_dir

__all__ = ["BuiltPatch", "Replacement", "prepare_live_patch", "kernel_symbol_table", "jmp_rel32",
           "AREA_START", "AREA_END"]

AREA_START = "__livepatch_start"
AREA_END = "__livepatch_end"
JMP_LEN = 5
_KERNEL_SRC = REPO / "qemu" / "kernel"
# .text.F, .text.unlikely.F, .text.hot.F ...: the function group F
_TEXT_PREFIXES = (".text.unlikely.", ".text.hot.", ".text.startup.", ".text.exit.", ".text.")
_DATA_PREFIXES = (".data.rel.ro.local.", ".data.rel.local.", ".data.rel.ro.", ".data.rel.",
                  ".data.", ".bss.", ".sdata.", ".sbss.")


def _fail(message, hint=None):
    raise GdbfaultError(message, hint)


@dataclass
class Replacement:
    name: str
    old: int            # the running kernel's entry, where the jmp goes
    new: int            # the replacement's address in the live-patch area
    size: int           # the replacement's size in bytes
    old_size: int = 0   # the replaced function's size (0: unknown)

    def describe(self):
        return {"name": self.name, "old": self.old, "new": self.new, "size": self.size}


@dataclass
class BuiltPatch:
    source: str                     # the file given to --live-patch
    kind: str                       # "patch" or "object"
    area: tuple                     # (start, end) of the kernel's live-patch area
    code_address: int
    code: bytes                     # everything loaded into the area
    functions: list = field(default_factory=list)    # [Replacement]

    def writes(self):
        """[(address, bytes)] in the order they must go in: code first, then the jmps."""
        out = [(self.code_address, self.code)]
        for f in self.functions:
            out.append((f.old, jmp_rel32(f.old, f.new)))
        return out

    def describe(self):
        return {"source": self.source, "kind": self.kind,
                "area": {"start": self.area[0], "end": self.area[1]},
                "code": {"address": self.code_address, "bytes": len(self.code)},
                "functions": [f.describe() for f in self.functions]}

    def write_plan(self, path, unpatch=False):
        """The writes as JSON for `faultprobe livepatch` (addresses and hex bytes);
        unpatch: the breakpoint's second hit puts the old entries back."""
        plan = {"writes": [[addr, data.hex()] for addr, data in self.writes()], "unpatch": bool(unpatch),
                "functions": [f.name for f in self.functions],
                "entries": [[f.old, f.old + JMP_LEN] for f in self.functions],
                # whole old functions, for the stack check of a patch applied at once
                "ranges": [[f.old, f.old + max(f.old_size, JMP_LEN)] for f in self.functions]}
        Path(path).write_text(json.dumps(plan))
        return Path(path)


def jmp_rel32(at, target):
    """`jmp target` encoded at address `at` (E9 rel32)."""
    rel = (target - (at + JMP_LEN)) & 0xFFFFFFFF
    return b"\xe9" + rel.to_bytes(4, "little")


# --------------------------------------------------------------------------
# The running kernel's symbols, locals included (several statics may share a name)

def kernel_symbol_table(kernel, system_map=None):
    """name -> [SymbolRow] of the running kernel, file-local symbols included (several statics
    may share a name), from the System.map if given, else the ELF .symtab (kernels/symbols.py).
    A System.map gives no sizes: a function there runs to the next symbol above it."""
    rows, _ = symbol_rows(kernel, system_map)
    if not system_map and not rows:
        _fail(f"{kernel} has no symbol table to link a live patch against",
              "pass its System.map with --system-map")
    table = {}
    if system_map:
        rows = sorted(r for r in rows if r.letter not in "aAUwWvV")
        starts = sorted({r.address for r in rows})
        following = {a: b for a, b in zip(starts, starts[1:])}
        for r in rows:
            kind = "func" if r.letter in CODE_LETTERS else "object" if r.letter in "dDbBrR" else "other"
            size = following.get(r.address, r.address) - r.address if kind == "func" else 0
            table.setdefault(r.name, []).append(r._replace(size=size, kind=kind))
        return table
    for r in rows:
        if r.letter not in "aA":
            table.setdefault(r.name, []).append(r)
    return table


def _resolve(table, name, source_file=None):
    """The one kernel symbol `name` means (a global, or the static of `source_file`)."""
    found = table.get(name) or []
    globals_ = [s for s in found if s.is_global]
    if globals_:
        return globals_[0]
    if source_file:
        mine = [s for s in found if s.file == source_file]
        if len(mine) == 1:
            return mine[0]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        _fail(f"live patch: '{name}' names {len(found)} file-local symbols in the kernel and "
              "the map cannot tell which one the replacement means")
    return None


# --------------------------------------------------------------------------
# Relocatable objects

class _Object:
    """What linking needs from a relocatable ELF object."""

    def __init__(self, path):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.relocation import RelocationSection
        self.path = Path(path)
        try:
            with open_input(path, "patch") as f:
                elf = ELFFile(f)
                if elf.header["e_type"] != "ET_REL" or elf.header["e_machine"] != "EM_386":
                    _fail(f"{path} is not a relocatable i386 ELF object "
                          f"({elf.header['e_type']}, {elf.header['e_machine']})")
                self.sections = {}          # index -> (name, flags, type, data)
                for i, sec in enumerate(elf.iter_sections()):
                    data = sec.data() if sec["sh_type"] != "SHT_NOBITS" else b"\0" * sec["sh_size"]
                    self.sections[i] = (sec.name, sec["sh_flags"], sec["sh_type"], data)
                symtab = elf.get_section_by_name(".symtab")
                if symtab is None:
                    _fail(f"{path} has no symbol table")
                self.symbols = []           # (name, type, bind, shndx, value, size)
                for sym in symtab.iter_symbols():
                    self.symbols.append((sym.name, sym["st_info"]["type"], sym["st_info"]["bind"],
                                         sym["st_shndx"], sym["st_value"], sym["st_size"]))
                self.relocs = {}            # target section index -> [(offset, type, symbol index)]
                for sec in elf.iter_sections():
                    if isinstance(sec, RelocationSection):
                        target = sec["sh_info"]
                        self.relocs[target] = [(r["r_offset"], r["r_info_type"], r["r_info_sym"])
                                               for r in sec.iter_relocations()]
        except (ELFError, OSError) as exc:
            _fail(f"cannot read {path} as an ELF object: {exc}")
        self.by_name = {name: i for i, (name, *_rest) in self.sections.items()}

    def alloc_sections(self):
        SHF_ALLOC = 0x2
        return [i for i, (name, flags, typ, _d) in self.sections.items()
                if flags & SHF_ALLOC and typ in ("SHT_PROGBITS", "SHT_NOBITS")
                and not name.startswith((".note", ".eh_frame", ".comment"))]

    def section_name(self, index):
        return self.sections[index][0]

    def defined_functions(self, bind=None):
        return [(name, shndx, value, size) for name, typ, b, shndx, value, size in self.symbols
                if typ == "STT_FUNC" and isinstance(shndx, int) and (bind is None or b == bind)]

    def referenced(self, section_index):
        """[(symbol name, symbol type, target section index or 'SHN_UNDEF')] a section relocates against."""
        out = []
        for _off, _typ, symi in self.relocs.get(section_index, []):
            name, typ, _bind, shndx, _v, _s = self.symbols[symi]
            out.append((name, typ, shndx))
        return out

    def signature(self, index):
        """A section's bytes and relocations, with targets named (not numbered)."""
        name, _f, _t, data = self.sections[index]
        rels = []
        for off, typ, symi in self.relocs.get(index, []):
            sname, styp, _b, shndx, _v, _s = self.symbols[symi]
            if styp == "STT_SECTION" and isinstance(shndx, int):
                sname = "section:" + self.section_name(shndx)
            rels.append((off, typ, sname))
        return (name, data, tuple(sorted(rels)))


def _group_of(section_name):
    for prefix in _TEXT_PREFIXES:
        if section_name.startswith(prefix):
            return section_name[len(prefix):]
    return None


def _data_symbol(section_name):
    for prefix in _DATA_PREFIXES:
        if section_name.startswith(prefix):
            return section_name[len(prefix):]
    return None


# --------------------------------------------------------------------------
# A patch for the lab kernel

def _lab_source_tree(variant):
    if variant in (None, "vanilla"):
        return _KERNEL_SRC
    tree = _KERNEL_SRC / "build" / variant / "src"
    if not tree.is_dir():
        _fail(f"the sources of the lab kernel's '{variant}' build are missing ({tree})", "run make build")
    return tree


def _copy_tree(src, dst):
    dst.mkdir(parents=True)
    for pattern in ("*.c", "*.S", "*.ld", "*.mk", "Makefile"):
        for f in src.glob(pattern):
            shutil.copy2(f, dst / f.name)
    shutil.copytree(src / "include", dst / "include")


def _changed_files(patch_text):
    files = []
    for line in patch_text.splitlines():
        if line.startswith("+++ "):
            path = line[4:].split("\t")[0].strip()
            if path != "/dev/null":
                files.append(path.split("/", 1)[1] if "/" in path else path)
    return files


def _created_files(patch_text):
    """Files a patch creates (`--- /dev/null` before their `+++`)."""
    created, previous = set(), ""
    for line in patch_text.splitlines():
        if line.startswith("+++ ") and previous.startswith("--- /dev/null"):
            path = line[4:].split("\t")[0].strip()
            created.add(path.split("/", 1)[1] if "/" in path else path)
        previous = line
    return created


def _patch_says(output):
    """The one line of patch(1)'s output that says what went wrong (not its quoting of the patch)."""
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    for key in ("can't find file", "FAILED", "malformed", "Only garbage", "Reversed", "not found", "rejects"):
        for line in lines:
            if key in line:
                return line
    plain = [l for l in lines if not l.startswith(("|", "The text leading", "----", "File to patch", "Skip"))]
    return plain[0] if plain else "patch failed"


def _kernel_cflags(tree, variant):
    """The lab kernel's own compiler flags, as kbuild.mk sets them."""
    proc = subprocess.run(["make", "-s", "-f", "kbuild.mk", "--no-print-directory",
                           # a recipe is expanded after every makefile is read
                           "--eval", "gdbfault-flags: ; @:$(info GDBFAULT-FLAGS $(CC) $(CPPFLAGS) $(CFLAGS))",
                           "gdbfault-flags",
                           f"VARIANT={variant}", "OUT=/nonexistent"],
                          cwd=tree, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("GDBFAULT-FLAGS "):
            words = shlex.split(line[len("GDBFAULT-FLAGS "):])
            return [w for w in words if w not in ("-MMD", "-MP")]
    _fail(f"cannot read the lab kernel's compiler flags from kbuild.mk: {proc.stderr.strip()[:200]}")


def _compile(cflags, tree, source, out):
    proc = subprocess.run(cflags + ["-ffunction-sections", "-fdata-sections", "-c", "-o", str(out), source],
                          cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        first = next((l for l in proc.stderr.splitlines() if "error" in l), proc.stderr.strip()[:200])
        _fail(f"the patched {source} does not compile: {first}")
    return out


def _build_from_patch(patch, variant, work):
    """(patched object, {group: changed?}, replaced function names) for a lab-kernel patch."""
    tree = _lab_source_tree(variant)
    text = read_input_text(patch, "patch", errors="replace")
    files = _changed_files(text)
    if not files:
        _fail(f"{patch} is not a patch (no '+++' file headers)")
    created = _created_files(text)
    missing = [f for f in files if f not in created and not (tree / f).is_file()]
    if missing:
        _fail(f"the patch changes {', '.join(missing)}, which the lab kernel ({variant or 'vanilla'}) does not "
              f"have", "a live patch applies to the lab kernel's sources (qemu/kernel/), with paths as in "
              "`git diff` there (a/FILE, b/FILE)")
    before, after = work / "before", work / "after"
    _copy_tree(tree, before)
    _copy_tree(tree, after)
    proc = subprocess.run(["patch", "-p1", "-F0", "-s", "--no-backup-if-mismatch", "-r", "-",
                           "-d", str(after), "-i", str(Path(patch).resolve())],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        _fail(f"the patch does not apply to the lab kernel ({variant or 'vanilla'}): "
              f"{_patch_says(proc.stdout + proc.stderr)}")
    not_c = [f for f in files if not f.endswith(".c")]
    if not_c:
        _fail(f"the patch changes {', '.join(not_c)}: a live patch can replace functions of .c files only")
    cflags = _kernel_cflags(after, variant or "vanilla")
    objects = []
    for source in files:
        old = _Object(_compile(cflags, before, source, work / (Path(source).stem + ".before.o")))
        new = _Object(_compile(cflags, after, source, work / (Path(source).stem + ".after.o")))
        objects.append((source, old, new))
    if len(objects) > 1:
        _fail("the patch changes several .c files; a live patch takes one file at a time")
    source, old, new = objects[0]
    changed = _changed_groups(old, new)
    if not changed:
        _fail(f"the patch changes no function's code in {source}: nothing to replace")
    return source, new, changed


def _groups(obj):
    groups = {}
    for i in obj.alloc_sections():
        g = _group_of(obj.section_name(i))
        if g is not None:
            groups.setdefault(g, []).append(i)
    return groups


def _changed_groups(old, new):
    """Function groups of `new` whose code differs from `old`'s (or that are new)."""
    old_groups, new_groups = _groups(old), _groups(new)
    changed = []
    for g, secs in sorted(new_groups.items()):
        sig_new = sorted(new.signature(i) for i in secs)
        sig_old = sorted(old.signature(i) for i in old_groups.get(g, []))
        if sig_new != sig_old:
            changed.append(g)
    return changed


# --------------------------------------------------------------------------
# Linking

def _link(obj, keep, replaced, table, area, source_file, work):
    """Link `keep` (section indices of obj) at area[0]; return (code bytes, {name: address})."""
    keep = set(keep)
    placed = {}             # section index -> kernel address (the kernel's own copy, not loaded)
    defines = {}            # undefined symbol -> kernel address
    todo = list(keep)
    seen = set(keep)
    while todo:
        idx = todo.pop()
        for name, typ, shndx in obj.referenced(idx):
            if shndx == "SHN_UNDEF":
                sym = _resolve(table, name)
                if sym is None:
                    _fail(f"live patch: undefined symbol '{name}' that the kernel's map cannot resolve")
                defines[name] = sym.address
                continue
            if not isinstance(shndx, int) or shndx in seen:
                continue
            sec_name = obj.section_name(shndx)
            kernel_name = _group_of(sec_name) or _data_symbol(sec_name)
            if typ != "STT_SECTION" and name:
                kernel_name = name
            sym = _resolve(table, kernel_name, source_file) if kernel_name else None
            if sym is not None and not sec_name.startswith(".rodata"):
                placed[shndx] = sym.address        # the running kernel's copy
            else:
                keep.add(shndx)                     # constants, new code or new data: loaded
                todo.append(shndx)
            seen.add(shndx)
    kept_names = sorted({obj.section_name(i) for i in keep})
    lines = ["SECTIONS", "{", f"  . = {area[0]:#x};", "  .livepatch : {"]
    lines += [f"    KEEP(*({n}))" for n in kept_names]
    lines += ["  }"]
    for n, (idx, addr) in enumerate(sorted(placed.items())):
        lines.append(f"  .kernel.{n} {addr:#x} (NOLOAD) : {{ *({obj.section_name(idx)}) }}")
    lines += ["  /DISCARD/ : { *(.eh_frame) *(.comment) *(.note.*) }", "}"]
    lines += [f"{name} = {addr:#x};" for name, addr in sorted(defines.items())]
    script = work / "livepatch.ld"
    script.write_text("\n".join(lines) + "\n")
    out = work / "livepatch.elf"
    proc = subprocess.run(["ld", "-m", "elf_i386", "-T", str(script), "--gc-sections",
                           "--no-warn-rwx-segments", "-o", str(out), str(obj.path)],
                          capture_output=True, text=True)
    if proc.returncode != 0 and "no-warn-rwx-segments" in proc.stderr:   # binutils < 2.39
        proc = subprocess.run(["ld", "-m", "elf_i386", "-T", str(script), "--gc-sections",
                               "-o", str(out), str(obj.path)], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()
        undefined = next((l for l in msg if "undefined reference" in l), None)
        _fail(f"live patch: linking failed: {(undefined or (msg[0] if msg else '?')).split(': ', 1)[-1]}")
    from elftools.elf.elffile import ELFFile
    with open(out, "rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".livepatch")
        code = sec.data() if sec is not None else b""
        addresses = {}
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym.name in replaced and sym["st_info"]["type"] == "STT_FUNC":
                addresses[sym.name] = (sym["st_value"], sym["st_size"])
    return code, addresses


# --------------------------------------------------------------------------

def prepare_live_patch(path, kernel, system_map=None, lab_variant=None):
    """Build FILE (a lab-kernel patch or an i386 .o) into a BuiltPatch for this kernel.

    lab_variant: the lab kernel build that runs (a patch needs its sources),
    or None for a kernel the user brings (objects only).
    """
    path = input_file(path, "patch", "live patch file")
    table = kernel_symbol_table(kernel, system_map)
    start, end = _resolve(table, AREA_START), _resolve(table, AREA_END)
    if start is None or end is None or end.address <= start.address:
        _fail(f"no free room in guest memory: the kernel has no live-patch area "
              f"({AREA_START}/{AREA_END} symbols)")
    area = (start.address, end.address)
    work = Path(tempfile.mkdtemp(prefix="gdbfault-livepatch-"))
    watch_dir(work)
    try:
        is_object = read_input_bytes(path, "patch")[:4] == b"\x7fELF"
        if is_object:
            kind, source_file = "object", None
            obj = _Object(path)
            replaced = [name for name, _s, _v, _z in obj.defined_functions("STB_GLOBAL")]
            if not replaced:
                _fail(f"{path} defines no global function to replace")
            keep = obj.alloc_sections()
        else:
            if lab_variant is None:
                _fail("a patch file needs the lab kernel's sources; for another kernel give a "
                      "relocatable .o of the replacement functions")
            kind = "patch"
            source_file, obj, changed = _build_from_patch(path, lab_variant, work)
            groups = _groups(obj)
            keep = [i for g in changed for i in groups[g]]
            # a changed static function the kernel does not have (it was inlined) is new code
            replaced = [g for g in changed if _resolve(table, g, source_file) is not None]
            if not replaced:
                _fail("the patch changes only functions the running kernel does not have "
                      f"({', '.join(changed)})")
        olds = {}
        for name in replaced:
            sym = _resolve(table, name, source_file)
            if sym is None or sym.kind not in ("func", "other"):
                _fail(f"live patch: {path.name} replaces '{name}', a function that does not exist "
                      "in the running kernel")
            size = sym.size or JMP_LEN
            if size < JMP_LEN:
                _fail(f"live patch: '{name}' is {size} bytes long, too short for a {JMP_LEN}-byte jmp")
            olds[name] = (sym.address, sym.size)
        code, addresses = _link(obj, keep, set(replaced), table, area, source_file, work)
        room = area[1] - area[0]
        if len(code) > room:
            _fail(f"no free room in guest memory: the replacement needs {len(code)} bytes, "
                  f"the kernel's live-patch area has {room}")
        functions = []
        for name in replaced:
            if name not in addresses:
                _fail(f"live patch: '{name}' is not in the linked replacement")
            new, size = addresses[name]
            functions.append(Replacement(name, olds[name][0], new, size, olds[name][1]))
        return BuiltPatch(str(path), kind, area, area[0], code, functions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
