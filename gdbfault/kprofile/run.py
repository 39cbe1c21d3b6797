"""`gdbfault profile`: where every kernel instruction of the workload goes.

Runs the guest once with gdbfault's kernel-profile TCG plugin
(qemu/plugin/kprofile.c) loaded and turns its output into a profile dict
(schema "gdbfault.profile/1", rendered by kprofile_report.py):

  kernel, workload, mode, tool   what was run, as in a RunResult
  guest       the workload's own GDBFAULT-RESULT summary
  iterations  the guest's iteration count (per-iteration figures divide by it)
  functions   [{symbol, address, size, instructions, entries, load,
                per_iteration, inclusive, aliases}] for the workload window,
              most instructions first (load = instructions / size in bytes,
              readprofile's "load")
  total       {kernel, user, boot, setup, exit}: instructions in the
              workload window (kernel, user), before the workload's first
              instruction (boot), and in the workload outside its measured
              loop (setup: entry to the first rdtsc; exit: after the second)
  folded      [[stack "a;b;c", instructions]] kernel call chains in the window
  boot_functions   the boot's top functions, [{symbol, instructions}]
  accounting  kernel + user against the guest's own cycle count
  stack       the shadow call stack's health (mismatched returns, overflow)

The workload window is exactly the guest's measured loop: its two rdtsc
instructions (found in the workload's rt_main) are the plugin's phase marks,
so under -icount shift=0 kernel + user equals the guest's `cycles` up to one
instruction per translation block left early (a faulting instruction counts
for its attempt, which icount does not count).
"""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from gdbfault import __version__
from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.probing.plugin_probes import PLUGIN_DIR, BUILD_COMMAND, PluginUnavailable

__all__ = ["SCHEMA", "ProfileSpec", "profile_library", "kernel_functions", "workload_marks",
           "write_ranges", "run_profile", "build_profile", "read_kprofile_result",
           "ENTRY_NAME", "NOT_ON_RUNNING_QEMU"]

SCHEMA = "gdbfault.profile/1"
RESULT_VERSION = 1
PHASES = ("boot", "setup", "workload", "exit")
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
    r"irq_entries_start|spurious_entries_start|common_interrupt|handle_exception)$")
NOT_ON_RUNNING_QEMU = ("a kernel profile needs the TCG plugin loaded when QEMU starts; "
                       "it cannot be added to a running QEMU: use `gdbfault profile --qemu`")
_TEXT_TYPES = "tT"


class ProfileSpec:
    """What one profile run boots: the attach options that apply."""

    def __init__(self, kernel="lab", variant="vanilla", system_map=None, workload="mprotect",
                 iterations=None, append="", icount=True, timeout_s=600.0, memory_mb=64,
                 qemu="qemu-system-i386", keep_run_dir=False, chains=True):
        self.kernel, self.variant, self.system_map = kernel, variant, system_map
        self.workload, self.iterations, self.append = workload, iterations, append
        self.icount, self.timeout_s, self.memory_mb = icount, timeout_s, memory_mb
        self.qemu, self.keep_run_dir = qemu, keep_run_dir
        self.chains = chains        # False: a plugin callback on every block (same counts; for checks)

    def command_line(self):
        words = [f"iterations={int(self.iterations)}"] if self.iterations is not None else []
        return " ".join(words + ([self.append] if self.append else []))


def _qemu_opt(value):
    """A QEMU option value: a comma is written twice."""
    return str(value).replace(",", ",,")


def profile_library(plugin_dir=None) -> Path:
    """build/libkprofile.so, or PluginUnavailable naming what is missing."""
    plugin_dir = Path(plugin_dir) if plugin_dir else PLUGIN_DIR
    lib = plugin_dir / "build" / "libkprofile.so"
    if lib.is_file():
        return lib
    missing = []
    if not (plugin_dir / "build" / "include" / "qemu-plugin.h").is_file():
        missing.append("QEMU's qemu-plugin.h header (fetched by qemu/plugin/fetch-header.sh)")
    if not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("a C compiler (apt-get install gcc)")
    missing = missing or [f"the built plugin {lib}"]
    raise PluginUnavailable("the kernel-profile plugin is unavailable: missing " + "; ".join(missing),
                            f"build it with `{BUILD_COMMAND}`")


# -- function ranges ---------------------------------------------------------

def _name_rank(letter, name):
    """Which of several names at one address to show: plain global names first."""
    return (name.startswith("_"), letter.islower(), name.startswith("."), name)


def kernel_functions(kernel, system_map=None):
    """[{symbol, address, end, aliases, entry}] of the kernel's code, sorted.

    From System.map when given (a kernel the user brings), else the ELF's
    .symtab. A function runs from its symbol to the next symbol at a higher
    address (readprofile's rule); names sharing an address are aliases.
    """
    from gdbfault.kernels.symbols import symbol_rows
    rows, source = symbol_rows(kernel, system_map)
    # Weak and absolute symbols do not start a function (nor end the one before).
    rows = [r for r in rows if r[1] not in ("aAUwWvV" if system_map else "aAC")]
    if not system_map and not any(t in _TEXT_TYPES for _, t, _ in rows):
        raise GdbfaultError(f"{kernel} has no function symbols (stripped or compressed?)",
                            "pass its System.map with --system-map")
    rows.sort()
    addresses = sorted({a for a, _, _ in rows})
    next_address = {a: b for a, b in zip(addresses, addresses[1:])}
    by_address = {}
    for address, letter, name in rows:
        if letter in _TEXT_TYPES:
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
    (0xc0000000 for a 3G/1G i386 kernel; user space lies below)."""
    return min(f["address"] for f in funcs) & ~0x0FFFFFFF


def workload_marks(workload_elf):
    """The plugin's phase marks for a workload: [(address, 'before'|'after')]:
    its entry point (boot ends), then its two rdtsc in rt_main (the guest's
    measured loop: cycles = c1 - c0, each reading counting itself)."""
    from gdbfault.kernels.workloads import elf_entry
    objdump = shutil.which("objdump")
    if not objdump:
        raise GdbfaultError("objdump is missing (apt-get install binutils)")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(workload_elf)],
                         capture_output=True, text=True, check=False).stdout
    current, rdtsc = None, []
    for line in out.splitlines():
        header = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if header:
            current = header.group(1)
            continue
        insn = re.match(r"^\s*([0-9a-f]+):\s+rdtsc\b", line)
        if insn and current == "rt_main":
            rdtsc.append(int(insn.group(1), 16))
    if len(rdtsc) != 2:
        raise GdbfaultError(f"expected two rdtsc in rt_main of {workload_elf}, found {len(rdtsc)}",
                            "the profile's workload window is the guest's measured loop")
    return [(elf_entry(workload_elf), "before"), (rdtsc[0], "after"), (rdtsc[1], "after")]


def uaccess_sites(kernel, funcs):
    """Kernel instructions allowed to fault (the ELF's __ex_table), [address].

    The plugin counts blocks holding one per instruction, so a fault there
    (a bad user pointer) still leaves exact counts. Absolute 2.x-style
    entries (insn, fixup) and relative 6.x-style ones (insn, fixup, data as
    offsets) are recognised; anything else (or a System.map-only kernel)
    gives none, and such faults are reported as inexact blocks.
    """
    import struct
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from gdbfault.kernels.symbols import is_elf
    if not Path(kernel).is_file() or not is_elf(kernel):
        return []
    lo, hi = min(f["address"] for f in funcs), max(f["end"] for f in funcs)
    try:
        with open(kernel, "rb") as fh:
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
    relative = [(start + 12 * i + signed[3 * i]) & 0xFFFFFFFF for i in range(len(signed) // 3)]
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


# -- the plugin's result -----------------------------------------------------

def _bad(path, what):
    from gdbfault.probing.plugin_probes import PluginResultError
    return PluginResultError(f"kernel-profile result {path} is malformed: {what}")


def read_kprofile_result(path):
    """The plugin's JSON, checked; PluginResultError when missing or corrupt."""
    from gdbfault.probing.plugin_probes import PluginResultError
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PluginResultError(f"kernel-profile result {path} is missing",
                                "the plugin writes it when QEMU exits; was QEMU killed?") from None
    except ValueError as err:
        raise PluginResultError(f"kernel-profile result {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("backend") != "kprofile" \
            or data.get("version") != RESULT_VERSION:
        raise _bad(path, "not a kprofile version-1 result")
    for key in ("user", "unknown_kernel", "left_early"):
        if not (isinstance(data.get(key), list) and len(data[key]) == len(PHASES)):
            raise _bad(path, f"'{key}' is not one count per phase")
    if not isinstance(data.get("functions"), list) or not isinstance(data.get("nodes"), list):
        raise _bad(path, "'functions' or 'nodes' is not a list")
    return data


def _folded(data, phase, names):
    """[(stack, count)] for one phase from the plugin's call tree nodes."""
    nodes = {n[0]: (n[1], n[2], n[3][phase]) for n in data["nodes"]}
    paths = {}

    def path_of(ix):
        if ix not in paths:
            parent, func, _ = nodes[ix]
            head = path_of(parent) + ";" if parent in nodes else ""
            paths[ix] = head + names.get(func, f"[func {func}]")
        return paths[ix]
    rows = [(path_of(ix), count) for ix, (_, _, count) in nodes.items() if count]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def _accounting(counted, cycles, left, inexact):
    """kernel + user against the guest's cycles (one instruction = one cycle).

    The window is the guest's own (its two rdtsc), so the only differences
    are blocks left early: a block counted per instruction that faults
    counts the faulting instruction's attempt, which -icount does not (+1
    each, `left_early_blocks`); a block counted whole that faults counts its
    unexecuted rest too (`inexact_blocks`, none unless the kernel faults
    outside its exception table). A fault on a block's last instruction
    looks finished and also adds 1 (`unexplained`, rare).
    """
    if cycles is None:
        return {"counted": counted, "guest_cycles": None, "left_early_blocks": left,
                "inexact_blocks": inexact, "difference": None, "unexplained": None, "exact": None,
                "agree": None}
    diff = counted - cycles
    # agree: what is left is no more than the inexact blocks' unexecuted
    # rests (at most 511 each: QEMU's largest block is 512 instructions) and
    # the rare fault on a block's last instruction
    slack = 511 * inexact + max(1, left // 100000)
    return {"counted": counted, "guest_cycles": cycles, "left_early_blocks": left,
            "inexact_blocks": inexact, "difference": diff, "unexplained": diff - left,
            "exact": diff == left and not inexact, "agree": 0 <= diff - left <= slack}


def _stack_health(stack, phase):
    """The shadow stack's counters for one phase (the plugin keeps one per phase)."""
    out = {}
    for key, value in stack.items():
        out[key] = value[phase] if isinstance(value, list) else value
    return out


def build_profile(data, guest, meta, funcs, top_boot=15):
    """The profile dict (module docstring) from the plugin's result."""
    w = PHASES.index("workload")
    by_start = {f["address"]: f for f in funcs}
    names = {f["id"]: f["name"] for f in data["functions"]}
    iterations = (guest or {}).get("iterations") or meta.get("iterations")
    folded = _folded(data, w, names)
    inclusive = {}
    for stack, count in folded:
        for name in set(stack.split(";")):
            inclusive[name] = inclusive.get(name, 0) + count
    rows = []
    kernel_total = 0
    for f in data["functions"]:
        n = f["insns"][w]
        kernel_total += n
        if not n and not f["entries"][w]:
            continue
        size = f["end"] - f["start"]
        info = by_start.get(f["start"], {})
        rows.append({"symbol": f["name"], "address": f["start"] or None, "size": size or None,
                     "instructions": n, "entries": f["entries"][w],
                     "load": round(n / size, 4) if size else None,
                     "per_iteration": round(n / iterations, 3) if iterations else None,
                     "inclusive": inclusive.get(f["name"], n),
                     "aliases": info.get("aliases", [])})
    rows.sort(key=lambda r: (-r["instructions"], r["symbol"]))
    user = data["user"]

    def phase_total(p):
        return user[p] + sum(f["insns"][p] for f in data["functions"])
    boot_rows = sorted(({"symbol": f["name"], "instructions": f["insns"][0]}
                        for f in data["functions"] if f["insns"][0]),
                       key=lambda r: -r["instructions"])[:top_boot]
    total = {"kernel": kernel_total, "user": user[w], "boot": phase_total(0),
             "setup": phase_total(1), "exit": phase_total(3)}
    accounting = _accounting(kernel_total + user[w], (guest or {}).get("cycles"),
                             data["left_early"][w], data.get("inexact_left_early", [0] * 4)[w])
    return {"schema": SCHEMA, **meta, "guest": guest, "iterations": iterations,
            "functions": rows, "total": total, "folded": [list(r) for r in folded],
            "boot_functions": boot_rows, "accounting": accounting,
            "phase_reached": data.get("phase_at_exit"),
            "stack": _stack_health(data.get("stack") or {}, w),
            "unknown_kernel": data["unknown_kernel"][w]}


# -- running -----------------------------------------------------------------

def _machine_config(spec, kernel, funcs, cleanup):
    """MachineConfig for the profile run: lab kernel, a multiboot kernel the
    user brings (the workload as its module, like the lab kernel), or a Linux
    image booted the way `attach` boots it."""
    from gdbfault.kernels.image import read_image
    from gdbfault.base.locations import workload_binary
    from gdbfault.machine.config import machine_config
    initrd = [workload_binary(spec.workload)]
    if spec.kernel == "lab" or read_image(kernel).multiboot:
        return machine_config(spec, kernel, initrd, None, "kprofile"), None
    from gdbfault.kernels.boot import prepare_boot
    from gdbfault.kernels.symbols import load_symbols
    symbols = load_symbols(kernel, spec.system_map)
    boot = prepare_boot(kernel, symbols, initrd[0], spec.command_line(), spec.memory_mb)
    cleanup.append(boot.work_dir)
    return machine_config(spec, kernel, initrd, boot, "kprofile"), boot


def _meta(spec, kernel, system_map, boot):
    from gdbfault.machine.qemu import qemu_version
    return {"tool": {"gdbfault": __version__, "qemu": qemu_version(spec.qemu)},
            "kernel": {"path": str(kernel), "lab": spec.kernel == "lab",
                       "variant": spec.variant if spec.kernel == "lab" else None,
                       "symbols": str(system_map) if system_map else f"ELF symbol table ({kernel})",
                       "boot": boot.describe() if boot else None},
            "workload": {"name": spec.workload, "iterations": spec.iterations,
                         "command_line": spec.command_line()},
            "mode": {"backend": "kprofile plugin", "accel": "tcg", "icount": spec.icount},
            "iterations": spec.iterations}


def run_profile(spec):
    """Boot with the kernel-profile plugin, run the workload, return the profile dict."""
    from gdbfault.base.locations import lab_kernel, workload_binary
    from gdbfault.machine.qemu import Machine, describe_exit
    from gdbfault.model.truth import parse_guest_output
    if spec.iterations is not None and spec.iterations <= 0:
        raise GdbfaultError(f"--iterations must be positive, not {spec.iterations}")
    library = profile_library()
    if spec.kernel == "lab":
        kernel, system_map = lab_kernel(spec.variant)
        system_map = spec.system_map or None        # the lab ELF has full symbols
    else:
        kernel, system_map = Path(spec.kernel), spec.system_map
        if not kernel.is_file():
            raise GdbfaultError(f"kernel file not found: {kernel}")
    funcs = kernel_functions(kernel, system_map)
    marks = workload_marks(workload_binary(spec.workload))
    cleanup = []
    machine = None
    try:
        config, boot = _machine_config(spec, kernel, funcs, cleanup)
        machine = Machine(config)
        machine.prepare()
        ranges, out = machine.run_dir / "ranges.txt", machine.run_dir / "kprofile.json"
        write_ranges(ranges, funcs, kernel_base(funcs), marks, uaccess_sites(kernel, funcs))
        config.extra_args = list(config.extra_args) + [
            "-plugin", f"file={_qemu_opt(library)},ranges={_qemu_opt(ranges)},"
                       f"out={_qemu_opt(out)}" + ("" if spec.chains else ",chains=off")]
        t0 = time.monotonic()
        machine.start()
        status = machine.wait(spec.timeout_s)
        try:
            if status is None:
                raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s (hung?)")
            wall = time.monotonic() - t0
            machine.check_exit(status)
            guest = parse_guest_output(machine.serial_output())["result"]
            if guest is None:
                raise GuestError("the workload printed no GDBFAULT-RESULT line")
        except GdbfaultError as exc:
            # the plugin writes its counts whenever QEMU exits: keep them for --output
            if out.is_file():
                try:
                    exc.partial = build_profile(read_kprofile_result(out), None,
                                                _meta(spec, kernel, system_map, boot), funcs)
                    exc.partial.update(complete=False, error=str(exc))
                except GdbfaultError:
                    pass
            raise
        data = read_kprofile_result(out)
        profile = build_profile(data, guest, _meta(spec, kernel, system_map, boot), funcs)
        profile["run"] = {"wall_s": round(wall, 3), "exit_status": status, "exit": describe_exit(status)}
        if not spec.icount:          # the guest's rdtsc is then host time, not instructions
            profile["accounting"] = dict(profile["accounting"], guest_cycles=None, difference=None,
                                         unexplained=None, exact=None, agree=None)
        return profile
    finally:
        if machine is not None:
            machine.close(keep_dir=spec.keep_run_dir)
        for folder in cleanup:
            shutil.rmtree(folder, ignore_errors=True)
