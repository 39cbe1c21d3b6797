"""Open one fault of a run's kept recording: `open_fault()` — what `gdbfault inspect` prints.

The pipeline, on a scratch copy of the recording (replay.py), one QEMU at a time:
1. reach: a replay from the nearest snapshot before the fault runs, with no
   breakpoint on the way (QMP `replay-break`), to one instruction before the
   previous fault's entry, saves a snapshot there (reverse execution back to
   that fault starts from it), runs on to the fault's entry E and saves one
   there. Of a live-patched run, a replay that crosses the patch moment has
   GDB write the patch at the workload's mark, as the run did;
2. its call tree: a replay from E with the kernel-profile plugin, to E + the
   fault's cost (calltree.py);
3. its card, and the user's commands: GDB on a replay from E (session.py).
The fault index (recordings/faults.py) says where each fault is.
"""
import re
import time
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.lifecycle import shielded
from gdbfault.inspect.calltree import fault_tree, kernel_ranges
from gdbfault.inspect.replay import KeptRecording, Scratch
from gdbfault.inspect.session import entry_convention, init_script, run_batch, run_interactive
from gdbfault.kernels.symbols import map_to_elf
from gdbfault.kernels.workloads import workload_points
from gdbfault.livepatch.hooks import PLAN_FILE
from gdbfault.machine.gdbmi import Debugger, mi_quote
from gdbfault.machine.plugins import PluginUnavailable
from gdbfault.probing.gdb_session import connect, load_probe_engine, prepare_debugger
from gdbfault.recordings.faults import INDEX_FILE, FaultIndex

__all__ = ["open_fault", "KeptRun", "choose", "reach", "NEAR", "AT_FAULT"]

# The snapshots saved on a scratch copy: before the previous fault, and at the fault.
NEAR, AT_FAULT = "gdbfault-near", "gdbfault-fault"
# Symbols of a kernel known only by its System.map, for GDB (kernels/symbols.map_to_elf).
MAP_ELF = "System.map.elf"


class KeptRun:
    """A run file, its kept recording (checked) and its fault index; the kernel's and workload's names."""

    def __init__(self, run_file, result, folder=None):
        self.run_file, self.result = run_file, result
        self.kept = KeptRecording(run_file, result, folder)
        folder = self.kept.folder
        rec = result.recording
        if not rec.index or not (folder / rec.index).is_file():
            raise GdbfaultError(f"the recording of {run_file} has no fault index (a run with --no-trace, or "
                                "one that ended early): there is no fault to open")
        self.index = FaultIndex.load(folder / rec.index, result.iterations)
        if self.index.sample != 1:
            raise GdbfaultError(f"{run_file} costed every {self.index.sample}th fault only (--cost-sample): "
                                "inspect needs every fault's instruction count; run it without --cost-sample")
        files = self.kept.manifest["guest"]["files"]
        self.system_map = folder / "System.map" if not result.kernel.lab and (folder / "System.map").is_file() \
            else None
        # the kernel's code: the multiboot ELF (the lab kernel), or the vmlinux of an x86_64 PVH boot
        self.kernel_elf = next((folder / n for n in ("kernel.elf", "vmlinux.elf") if n in files), None)
        self.workload = next((folder / n for n in ("init.elf", "workload.elf") if (folder / n).is_file()), None)
        entry = result.probe("fault entry")
        if entry is None:
            raise GdbfaultError(f"{run_file} has no fault entry probe")
        self.entry = entry.address
        self.emulator = self.kept.manifest["guest"]["qemu"]["emulator"]
        self.convention = entry_convention(self.emulator, result.kernel.profile)
        lp = result.live_patch
        self.patch = None
        if lp is not None and lp.applied and lp.icount is not None and (folder / PLAN_FILE).is_file():
            mark = workload_points(self.workload).mark if self.workload else None
            self.patch = {"icount": lp.icount, "mark": mark, "plan": folder / PLAN_FILE,
                          "functions": lp.functions}

    def gdb_symbols(self, scratch):
        """The file GDB takes the kernel's names from: its ELF, or one made from its System.map."""
        if self.system_map is None and self.kernel_elf is not None:
            return self.kernel_elf
        if self.system_map is None:
            raise GdbfaultError("the recording has neither the kernel's ELF nor its System.map")
        return map_to_elf(self.system_map, Path(scratch.folder) / MAP_ELF,
                          "x86_64" if self.emulator == "x86_64" else "i386")

    def ranges(self, scratch):
        """The kernel-profile plugin's ranges file for this kernel, in the scratch folder."""
        path = Path(scratch.folder) / "ranges.txt"
        code = self.kernel_elf if self.kernel_elf is not None else self.system_map
        kernel_ranges(path, code, self.system_map, (self.patch or {}).get("functions", ()))
        return path


def choose(index, fault=None, path=None, how=None, nth=None, iteration=None):
    """The fault a user asked for: --fault N, --iteration K [--path S], --path S --max|--min|--nth K."""
    if fault is not None:
        return index.number(fault)
    if iteration is not None:
        faults = index.of_iteration(iteration)
        if path is None:
            return faults[0]
        shape = index.resolve_shape(path, faults)
        mine = [f for f in faults if f.shape == shape]
        if not mine:
            raise GdbfaultError(f"iteration {iteration} took no {shape!r} fault; its faults: "
                                + ", ".join(f"{f.number} ({f.shape})" for f in faults))
        return mine[0]
    if path is not None:
        return index.pick(path, how or ("nth" if nth else "max"), nth)
    raise GdbfaultError("say which fault: --fault N, --path SHAPE [--max|--min|--nth K] or --iteration K")


def _reach(run, scratch, fault, previous, deadline):
    """Snapshots at the fault's entry and one instruction before the previous fault's: (near, at)."""
    targets = [(fault.icount, AT_FAULT)]
    if previous is not None:
        targets.insert(0, (previous.icount - 1, NEAR))
    saved = reach(run, scratch, targets, deadline)
    _check_entry(run, saved[AT_FAULT], fault)
    return saved.get(NEAR), saved[AT_FAULT]


def reach(run, scratch, targets, deadline):
    """One replay, from the nearest snapshot before the first of `targets` [(icount, name)], that saves a
    snapshot at each (in instruction order): {name: {name, icount}}. Targets before that snapshot are left out."""
    targets = sorted(targets)
    start = run.kept.nearest_snapshot(targets[0][0])
    targets = [t for t in targets if t[0] >= start["icount"]]
    patch = run.patch
    crosses = patch is not None and start["icount"] < patch["icount"] <= targets[-1][0]
    replay = scratch.start(start, gdb=crosses)
    dbg = None
    saved = {}
    try:
        if crosses:
            dbg = _patching_debugger(run, replay)
        for icount, name in targets:
            if crosses and name == NEAR and icount < patch["icount"]:
                continue        # (reverse execution from before the patch would replay it unpatched)
            replay.run_to(icount, resume=(lambda: dbg.mi("-exec-continue")) if dbg else True, deadline=deadline)
            saved[name] = replay.save(name)
            saved[name]["registers"] = replay.hmp("info registers")
        replay.quit()
    finally:
        with shielded():
            if dbg is not None:
                dbg.close()
            replay.close()
    return saved


def _patching_debugger(run, replay):
    """GDB on the reaching replay, writing the live patch at the workload's mark as the run did."""
    patch = run.patch
    if patch["mark"] is None:
        raise GdbfaultError("the live-patched run's workload has no mark to write the patch at")
    dbg = Debugger()
    try:
        prepare_debugger(dbg, run.kernel_elf or run.kept.folder / "kernel.elf", None)
        connect(dbg, str(replay.machine.gdb_socket))
        load_probe_engine(dbg, [], None, replay=True)
        dbg.console(f"faultprobe livepatch *{patch['mark']:#x} {mi_quote(str(patch['plan']))}")
    except BaseException:
        dbg.close()
        raise
    return dbg


def _check_entry(run, at, fault):
    """At the fault's entry, the CPU must be at the fault entry function: else the replay went elsewhere."""
    text = at["registers"]
    m = re.search(r"\b[ER]IP=([0-9a-fA-F]+)", text)
    if m and int(m.group(1), 16) != run.entry:
        raise GdbfaultError(f"the replay is not at the fault entry at guest instruction {fault.icount:,} "
                            f"(the CPU is at {int(m.group(1), 16):#x}, not {run.entry:#x}): the recording and "
                            "the run's fault index disagree")


def open_fault(run_file, result, chooser, commands=(), interactive=False, tree=True, timeout=600.0):
    """Open the fault `chooser(index)` picks (see the module docstring); the dict inspect shows."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    run = KeptRun(run_file, result)
    fault = chooser(run.index)
    previous = run.index.previous(fault)
    timings = {}
    scratch = Scratch(run.kept)
    notes = []
    try:
        near, at = _reach(run, scratch, fault, previous, deadline)
        timings["reach_s"] = round(time.monotonic() - t0, 3)
        calls = None
        if tree:
            t1 = time.monotonic()
            try:
                calls = fault_tree(scratch, at, fault.cost, run.ranges(scratch), deadline)
            except PluginUnavailable as exc:
                notes.append(f"no call tree: {exc}")
            timings["tree_s"] = round(time.monotonic() - t1, 3)
        t1 = time.monotonic()
        card, ex = _gdb_at(run, scratch, at, commands, deadline)
        timings["gdb_s"] = round(time.monotonic() - t1, 3)
        out = _summary(run, fault, card, calls, ex, near, notes)
        out["timings"] = {**timings, "total_s": round(time.monotonic() - t0, 3)}
        if interactive:       # (the scratch copy is the caller's to close now)
            kept_scratch = scratch
            out["interactive"] = lambda: _interactive(run, kept_scratch, at)
            out["close"] = kept_scratch.close
            scratch = None
        return out
    finally:
        if scratch is not None:
            scratch.close()


def _gdb_at(run, scratch, at, commands, deadline):
    """The card and the commands' outputs, from GDB on a replay at the fault (session.py)."""
    replay = scratch.start(at, gdb=True)
    try:
        script = init_script(Path(scratch.folder) / "inspect.gdb", replay.machine.gdb_socket, run.emulator,
                             run.gdb_symbols(scratch), run.workload, run.entry)
        return run_batch(script, run.convention, Path(scratch.folder) / "card.json", list(commands),
                         max(10.0, deadline - time.monotonic()))
    finally:
        replay.close()


def _interactive(run, scratch, at):
    """GDB at the fault on the user's terminal (after the card was shown)."""
    replay = scratch.start(at, gdb=True)
    try:
        script = init_script(Path(scratch.folder) / "inspect.gdb", replay.machine.gdb_socket, run.emulator,
                             run.gdb_symbols(scratch), run.workload, run.entry)
        return run_interactive(script, run.convention)
    finally:
        replay.close()


def _summary(run, fault, card, calls, ex, near, notes):
    """What inspect shows, as plain data (the JSON of --format json)."""
    index = run.index
    same_iteration = [f.number for f in index.faults if f.iteration == fault.iteration] \
        if fault.iteration is not None else []
    entry = fault.icount
    for item in ex:
        item["from_entry"] = item["icount"] - entry if item["icount"] is not None else None
    return {"run": str(run.run_file),
            "fault": {"index": fault.number, "of": len(index), "iteration": fault.iteration, "shape": fault.shape,
                      "cost": fault.cost, "icount": fault.icount, "mode": "user" if card["user"] else "kernel",
                      "write": card["write"], "present": card["present"], "fetch": card["fetch"],
                      "eip": card["ip"], "eip_symbol": card["ip_symbol"], "instruction": card["instruction"],
                      "cr2": card["cr2"], "error_code": card["error_code"], "entry": card["entry"],
                      "pt_regs": card["layout"]},
            "iteration_faults": same_iteration,
            "backtrace": card["chain"],
            "deepest": calls.deepest() if calls is not None else None,
            "calls": calls.to_list() if calls is not None else None,
            "tree_total": calls.total if calls is not None else None,
            "left_early": calls.left_early if calls is not None else None,
            "reverse_from": near["icount"] if near else None,
            "ex": ex,
            "recording": {"dir": str(run.kept.folder), "digest": run.kept.manifest["digest"],
                          "made": run.kept.manifest["made"]},
            "arch": run.emulator, "notes": notes,
            "index_file": INDEX_FILE}
