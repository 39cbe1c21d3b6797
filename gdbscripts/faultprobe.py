"""faultprobe: count kernel fault-path functions from inside GDB.

Source this file in a GDB attached to a kernel (for example QEMU's gdbstub):

    (gdb) source gdbscripts/faultprobe.py
    (gdb) faultprobe add "fault entry" do_page_fault
    (gdb) faultprobe add "signal forced" force_sig
    (gdb) continue            # ... then Ctrl-C
    (gdb) faultprobe stats

Each probe is an internal breakpoint whose stop() counts the hit and returns
False, so the guest never stops for the user and no round trip to another
process happens per hit: that is the fastest way GDB offers to count.

QEMU's gdbstub sometimes reports one hit twice when the guest runs live: the
same breakpoint again, with no guest instruction executed in between. A stop
at the same breakpoint as the previous stop with identical registers is taken
as such a duplicate unless the guest's instruction count (QMP, when known)
shows progress; the duplicates are counted apart and never added to the
hits. The check reads the general registers at every stop (nine on i386,
seventeen on x86_64), so it can be turned off
where QEMU does not duplicate: `faultprobe dedup off` (gdbfault does so when
it counts in a record/replay replay, where no duplicate has been seen; the
counts are checked against the guest's own summary either way).

The engine works on i386 and x86_64 kernels alike: the path tracer reads the
return address at the stack pointer, `faultprobe wordsize 4|8` wide (the
kernel's, which gdbfault sets; by hand it defaults to GDB's pointer size),
whichever register set the gdbstub sends.

gdbfault drives these same commands over GDB/MI and reads `faultprobe json`.
"""
import gzip
import json
import re
import socket
import time
from array import array

import gdb

__all__ = ["ENGINE", "ProbeEngine", "CountingBreakpoint", "PhaseBreakpoint", "LivePatchBreakpoint",
           "IcountBreakpoint"]

# Registers compared to spot a duplicate stop report, by GDB's register set: QEMU's
# x86_64 gdbstub sends 64-bit registers whatever the guest runs (GDB architecture
# i386:x86-64), qemu-system-i386's 32-bit ones (i386).
_DUP_REGS = {
    "i386": ("$eax", "$ecx", "$edx", "$ebx", "$esp", "$ebp", "$esi", "$edi", "$eflags"),
    "x86-64": ("$rax", "$rcx", "$rdx", "$rbx", "$rsp", "$rbp", "$rsi", "$rdi", "$r8", "$r9", "$r10", "$r11",
               "$r12", "$r13", "$r14", "$r15", "$eflags"),
}
# The stack pointer and the program counter, whatever the register set ($esp or $rsp).
_SP, _PC = "$sp", "$pc"


def _architecture():
    """GDB's architecture name for the target ("i386", "i386:x86-64")."""
    try:
        return gdb.selected_inferior().architecture().name()
    except (AttributeError, gdb.error):          # GDB < 12: ask the frame (one memory read, once)
        return gdb.selected_frame().architecture().name()


def _register_set():
    return "x86-64" if "x86-64" in _architecture() else "i386"


def _reg(name, _eval=gdb.parse_and_eval):
    """A register of the stopped thread. Not frame.read_register(): building
    the frame object costs GDB a memory read from the target at every stop
    (measured: one extra 'm' packet a hit), while $reg comes from the cache."""
    return int(_eval(name))
SCHEMA_VERSION = 1


class CountingBreakpoint(gdb.Breakpoint):
    """A silent breakpoint that counts its hits per phase."""

    def __init__(self, engine, role, symbol, location):
        super().__init__(location, internal=True)
        self.silent = True
        self.engine = engine
        self.role = role
        self.symbol = symbol
        self.where = location
        self.hits = {"boot": 0, "workload": 0}
        self.duplicates = 0

    def stop(self):
        engine = self.engine
        if engine.dedup and engine.is_duplicate(self):
            self.duplicates += 1
            return False
        self.hits[engine.phase] += 1
        tracer = engine.tracer
        if tracer is not None:
            if self.role == tracer.entry_role:
                tracer.enter()
            else:
                tracer.event(self.role)
        return False

    def address(self):
        """The resolved address, or None while pending."""
        try:
            locs = self.locations
        except AttributeError:      # GDB < 13 has no Breakpoint.locations
            locs = None
        if locs:
            return locs[0].address
        try:
            return int(gdb.parse_and_eval(f"(unsigned long)&{self.symbol}")) if self.symbol else None
        except gdb.error:
            return None


class PhaseBreakpoint(gdb.Breakpoint):
    """Switches the engine from the boot phase to the workload phase once, when the workload's
    first instruction runs.

    QEMU reports a breakpoint before it fetches the instruction. A kernel that maps
    the program on demand (Linux) has not mapped its first page yet: the fetch then
    faults, the kernel maps the page (exec's work: the boot phase), and the same
    instruction is reached again. So the phase switches only at a stop where the
    instruction's bytes are readable, as the counting plugin switches at the
    instruction's execution."""

    def __init__(self, engine, location):
        super().__init__(location, internal=True)
        self.silent = True
        self.engine = engine

    def stop(self):
        try:
            gdb.selected_inferior().read_memory(_reg(_PC), 1)
        except gdb.MemoryError:
            return False            # not mapped yet: the fault that maps it comes first
        self.engine.phase = "workload"
        self.enabled = False
        return False


class ProbeEngine:
    """All probes of this GDB session and their counts."""

    def __init__(self):
        self.probes = []
        self.phase = "workload"
        self.phase_bp = None
        self.started = time.monotonic()
        self.dedup = True           # filter duplicate stop reports (live QEMU); see module doc
        self.last_bp = None
        self.last_regs = None
        self.icount_reader = None   # callable returning the guest instruction count
        self.stops = 0              # stops taken as real (not duplicates)
        self.stop_icount = None     # (stop number, instruction count) when a stop read it
        self.tracer = None          # a PathTracer once `faultprobe trace` ran
        self.marks = []             # counts at each `mark` (live patch, unpatch), see mark()
        self.patch = None           # what `faultprobe livepatch` did, when it did
        self.icount_marks = {}      # name -> instruction count at `faultprobe icount-at`
        self.own_icount = None      # a QMP reader opened for icount-at without a tracer
        self.word_size = None       # bytes of a kernel stack word; None: GDB's pointer size
        self.dup_regs = None        # registers the duplicate filter compares, read at its first use

    def word(self):
        """Bytes of an address on the kernel's stack (`faultprobe wordsize`, else GDB's pointer size)."""
        if self.word_size is None:
            self.word_size = gdb.lookup_type("void").pointer().sizeof
        return self.word_size

    def add(self, role, location, symbol=None):
        if symbol is None and not location.startswith("*"):
            symbol = location
        bp = CountingBreakpoint(self, role, symbol, location)
        if bp.pending or bp.address() is None and not location.startswith("*"):
            bp.delete()
            raise gdb.GdbError(f"faultprobe: cannot place a probe on '{location}' "
                               "(unknown symbol or address)")
        self.probes.append(bp)
        return bp

    def arm_at(self, location):
        """Count from `location`'s first execution on as the workload phase."""
        if self.phase_bp is not None:
            self.phase_bp.delete()
        self.phase_bp = PhaseBreakpoint(self, location)
        self.phase = "boot"

    def is_duplicate(self, bp):
        """Is this stop a second report of the previous one? (see module doc)

        Same breakpoint and same registers as the previous stop mean a
        duplicate, unless the previous stop's instruction count is known (the
        path tracer reads it at fault entries and returns) and has moved.
        """
        if self.dup_regs is None:
            self.dup_regs = _DUP_REGS[_register_set()]
        regs = tuple(_reg(r) for r in self.dup_regs)
        if bp is self.last_bp and regs == self.last_regs:
            known = self.stop_icount
            if known is None or known[0] != self.stops or self.icount_reader is None:
                return True
            if self.icount_reader() == known[1]:
                return True
        self.last_bp = bp
        self.last_regs = regs
        self.stops += 1
        return False

    def note_icount(self, value):
        """The tracer read the instruction count at the current stop."""
        self.stop_icount = (self.stops, value)

    def mark(self):
        """Remember every count as it is now: the snapshot then splits before/after.

        Nothing changes on the per-hit path; costs are lists that only grow,
        so the split of each is just its length at this moment.
        """
        marked = {"stops": self.stops,
                  "probes": [{"address": bp.address(), "hits": dict(bp.hits)} for bp in self.probes]}
        if self.tracer is not None:
            t = self.tracer
            marked["trace"] = {"entries": t.entries, "lost": t.lost, "open": len(t.stack),
                               "iteration_costs": len(t.iteration_costs),
                               "paths": [{"phase": ph, "events": list(ev), "count": r["count"],
                                          "costed": len(r["costs"])}
                                         for (ph, ev), r in t.paths.items()]}
        self.marks.append(marked)

    def icount_now(self):
        reader = self.icount_reader or self.own_icount
        return reader() if reader is not None else None

    def reset(self):
        for bp in self.probes:
            bp.hits = {"boot": 0, "workload": 0}
            bp.duplicates = 0
        self.last_bp = self.last_regs = self.stop_icount = None
        if self.tracer is not None:
            self.tracer.reset()
        self.started = time.monotonic()

    def clear(self):
        # Delete one at a time, forgetting each as it goes: a retried clear
        # after an error part way through must not touch deleted ones.
        while self.probes:
            bp = self.probes[-1]
            if bp.is_valid():
                bp.delete()
            self.probes.pop()
        if self.phase_bp is not None:
            if self.phase_bp.is_valid():
                self.phase_bp.delete()
            self.phase_bp = None
        self.phase = "workload"
        if self.tracer is not None:
            self.tracer.close()
            self.tracer = None

    def set_enabled(self, enabled):
        for bp in self.probes:
            bp.enabled = enabled

    def snapshot(self):
        probes = []
        for bp in self.probes:
            addr = bp.address()
            probes.append({"role": bp.role, "symbol": bp.symbol, "location": bp.where,
                           "address": addr, "hits": dict(bp.hits),
                           "total": bp.hits["boot"] + bp.hits["workload"],
                           "duplicates": bp.duplicates})
        snap = {"schema": SCHEMA_VERSION, "phase": self.phase, "dedup": self.dedup,
                "elapsed_s": round(time.monotonic() - self.started, 3),
                "probes": probes,
                "total_hits": sum(p["total"] for p in probes),
                "duplicates": sum(p["duplicates"] for p in probes)}
        if self.tracer is not None:
            snap["trace"] = self.tracer.snapshot()
        if self.marks:
            snap["mark"] = self.marks[0]
            snap["marks"] = self.marks
        if self.patch is not None:
            snap["patch"] = self.patch
        if self.icount_marks:
            snap["icount_marks"] = dict(self.icount_marks)
        return snap


class QmpIcount:
    """Reads the guest instruction count over QMP (`query-replay`, QEMU under -icount), on a plain socket.

    One JSON line out, lines in until the reply (QEMU's asynchronous events,
    such as the STOP/RESUME of every breakpoint stop, are skipped). Not the
    qemu.qmp library: inside GDB's Python each of its reads kept ~7.5 KB
    (GDB grew to ~3 GB over 100,000 mprotect iterations, two reads a fault);
    this reader stays flat and takes 0.3-0.7 ms a read, as QEMU hands the
    command from its monitor thread to the main loop and back: in a replay,
    `MonitorIcount` is ten times cheaper. `hmp(LINE)` runs a human monitor
    command (the tracer's keyframes: `savevm`)."""

    def __init__(self, socket_path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(socket_path)
        except OSError as exc:
            self.sock.close()
            raise gdb.GdbError(f"faultprobe: cannot connect to QMP at {socket_path}: {exc}")
        self.file = self.sock.makefile("rwb")
        self._reply(greeting=True)
        self.command("qmp_capabilities")

    def _reply(self, greeting=False):
        while True:
            line = self.file.readline()
            if not line:
                raise gdb.GdbError("faultprobe: QMP closed (QEMU gone?)")
            msg = json.loads(line)
            if greeting and "QMP" in msg:
                return msg
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise gdb.GdbError(f"faultprobe: QMP: {msg['error'].get('desc', msg['error'])}")

    def command(self, name, **arguments):
        msg = {"execute": name, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        return self._reply()

    def __call__(self):
        return self.command("query-replay")["icount"]

    def hmp(self, line):
        """What a human monitor command printed ("" for a savevm that worked)."""
        return self.command("human-monitor-command", **{"command-line": line})

    def close(self):
        for part in (self.file, self.sock):
            try:
                part.close()
            except Exception:
                pass


class MonitorIcount:
    """Reads the guest instruction count through the gdbstub (`monitor info replay`).

    One round trip on the GDB connection QEMU already serves in its main
    loop: ~0.07 ms a read here, against 0.4-1.3 ms for a QMP query-replay
    (the same counter, QEMU's replay_get_current_icount). QEMU prints it only
    in record/replay mode, so gdbfault reads it this way in replays and over
    QMP elsewhere."""

    COUNT = re.compile(r"instruction count = (\d+)")

    def __call__(self):
        said = gdb.execute("monitor info replay", to_string=True)
        found = self.COUNT.search(said)
        if found is None:
            raise gdb.GdbError(f"faultprobe: no instruction count from `monitor info replay` ({said.strip()!r}); "
                               "it needs QEMU under rr=record or rr=replay")
        return int(found.group(1))

    def close(self):
        pass


def icount_reader(where):
    """The instruction-count reader for `where`: "monitor" (record/replay) or a QMP socket path."""
    return MonitorIcount() if where == "monitor" else QmpIcount(where)


class ReturnBreakpoint(gdb.Breakpoint):
    """Where the fault handler returns to: closes the innermost open path."""

    def __init__(self, tracer, address):
        super().__init__(f"*{address:#x}", internal=True)
        self.silent = True
        self.tracer = tracer
        self.duplicates = 0

    def stop(self):
        engine = self.tracer.engine
        if engine.dedup and engine.is_duplicate(self):
            self.duplicates += 1
            return False
        self.tracer.leave()
        return False


class PathTracer:
    """Follows each fault from its entry to its return.

    A path is the list of probe roles hit between a fault's entry and the
    return to the instruction after the call that entered it; its cost is the
    guest instruction count between the two (`icount_reader`). Open paths
    form a stack, so a fault taken inside the handler nests instead of mixing
    with the outer one; the return is matched to its entry by stack pointer.
    The return site is learned from the stack at the first entry (on x86_64 Linux
    5.8+ the instruction after the direct `call exc_page_fault` in
    `asm_exc_page_fault`; on i386 6.1 the one after handle_exception's indirect
    call, shared by every exception: only the stack pointer tells them apart).

    Each costed path also keeps its entry's instruction count, so that a
    recording of the run can be opened at any fault later (`faultprobe index
    FILE` writes them all); with `faultprobe keyframes`, QEMU saves a VM
    snapshot at a fault entry every so many instructions (a replay can then
    start near any fault instead of at the beginning).
    """

    def __init__(self, engine, entry_role, icount=None, sample=1):
        self.engine = engine
        self.entry_role = entry_role
        self.icount = icount
        self.sample = max(1, int(sample))
        self.returns = {}       # return address -> ReturnBreakpoint
        self.timeline = None    # [(entry icount, events)] once `faultprobe timeline` ran
        self.keyframe = None    # {"interval", "next", "most", "saved": [[icount, name]], ...} (keyframes)
        self.monitor = None     # the QmpIcount that saves keyframes
        self.reset()

    def reset(self):
        self.stack = []         # [entry stack pointer, entry icount or None, [events], phase]
        self.paths = {}         # (phase, events) -> {"count": n, "costs": [...]}
        self.entries = 0
        self.lost = 0           # entries whose return was never seen (unwound past)
        self.last_signal_entry = None
        self.iteration_costs = []

    def enter(self):
        sp = _reg(_SP)
        word = self.engine.word()
        ret = int.from_bytes(bytes(gdb.selected_inferior().read_memory(sp, word)), "little")
        if ret not in self.returns:
            self.returns[ret] = ReturnBreakpoint(self, ret)
        self.entries += 1
        icount = None
        if self.icount is not None and (self.entries - 1) % self.sample == 0:
            icount = self.icount()
            self.engine.note_icount(icount)
            if self.keyframe is not None and icount >= self.keyframe["next"] \
                    and self.engine.phase == "workload":
                self._save_keyframe(icount)
        self.stack.append([sp, icount, [], self.engine.phase])

    def event(self, role):
        if self.stack:
            self.stack[-1][2].append(role)

    def leave(self):
        sp = _reg(_SP)
        word = self.engine.word()
        while self.stack:
            entry_sp, icount, events, phase = self.stack.pop()
            if entry_sp + word == sp:         # the call's return address is popped
                cost = None
                if icount is not None:
                    now = self.icount()
                    self.engine.note_icount(now)
                    cost = now - icount
                self._record(phase, events, cost, icount)
                return
            self.lost += 1

    def _record(self, phase, events, cost, entry_icount):
        rec = self.paths.setdefault((phase, tuple(events)), {"count": 0, "costs": [], "entries": array("Q")})
        rec["count"] += 1
        if cost is not None:
            rec["costs"].append(cost)
            rec["entries"].append(entry_icount)
            if self.timeline is not None:
                self.timeline.append((entry_icount, events))
        # One mprotect-loop iteration = one signal-raising fault to the next.
        if entry_icount is not None and self.sample == 1 and "signal forced" in events:
            if self.last_signal_entry is not None:
                self.iteration_costs.append(entry_icount - self.last_signal_entry)
            self.last_signal_entry = entry_icount

    def keyframes(self, interval, most, monitor):
        """Save a VM snapshot at a workload fault's entry every `interval` instructions
        (counted from now), at most `most` of them: past that, every other one is deleted
        and the interval doubles, so they stay evenly spread over the whole run.
        `monitor`: a QmpIcount, whose human monitor saves them."""
        start = self.icount()
        if self.monitor is not None and self.monitor is not self.icount:
            self.monitor.close()
        self.monitor = monitor
        self.keyframe = {"interval": interval, "most": most, "next": start + interval, "saved": [],
                         "refused": 0, "error": None}

    def _save_keyframe(self, icount):
        kf = self.keyframe
        name = f"gdbfault-kf-{icount}"
        said = self.monitor.hmp(f"savevm {name}").strip()
        if said:
            # e.g. "Record/replay does not allow making snapshot right now": at the next fault
            kf["refused"] += 1
            kf["error"] = said[:200]
            return
        kf["saved"].append([icount, name])
        kf["next"] = icount + kf["interval"]
        if len(kf["saved"]) > kf["most"]:
            for _, dropped in kf["saved"][1::2]:
                self.monitor.hmp(f"delvm {dropped}")
            kf["saved"] = kf["saved"][0::2]
            kf["interval"] *= 2
            kf["next"] = kf["saved"][-1][0] + kf["interval"]

    def write_index(self, path):
        """Every costed path's entry instruction count, shape and cost, in entry order, as
        gzip'd JSON: {"version": 1, "sample", "shapes": [{"phase", "events"}], "entry": [first,
        then differences], "shape": [shape index], "cost": [instructions]}. Returns how many."""
        shapes, faults = [], []
        for (phase, events), rec in self.paths.items():
            sid = len(shapes)
            shapes.append({"phase": phase, "events": list(events)})
            faults += [(e, sid, c) for e, c in zip(rec["entries"], rec["costs"])]
        faults.sort()
        entries = [e for e, _, _ in faults]
        data = {"version": 1, "sample": self.sample, "shapes": shapes,
                "entry": entries[:1] + [b - a for a, b in zip(entries, entries[1:])],
                "shape": [sid for _, sid, _ in faults], "cost": [c for _, _, c in faults]}
        with gzip.open(path, "wt", compresslevel=6) as f:
            json.dump(data, f, separators=(",", ":"))
        return len(faults)

    def snapshot(self):
        return {"entry_role": self.entry_role, "sample": self.sample,
                "icount": self.icount is not None,
                "return_sites": sorted(self.returns),
                "entries": self.entries, "lost": self.lost,
                "open": [{"phase": ph, "events": list(ev)} for _, _, ev, ph in self.stack],
                "paths": [{"phase": ph, "events": list(ev), "count": r["count"], "costs": r["costs"]}
                          for (ph, ev), r in self.paths.items()],
                "iteration_costs": self.iteration_costs,
                **({"timeline": [[ic, list(ev)] for ic, ev in self.timeline]}
                   if self.timeline is not None else {}),
                **({"keyframes": {k: self.keyframe[k] for k in ("saved", "interval", "refused", "error")}}
                   if self.keyframe is not None else {})}

    def close(self):
        for bp in self.returns.values():
            if bp.is_valid():
                bp.delete()
        self.returns = {}
        if self.icount is not None:
            self.icount.close()
        if self.monitor is not None and self.monitor is not self.icount:
            self.monitor.close()
        self.monitor = None


def _apply_plan(engine, plan, record):
    """Write the plan (saving what the jmps overwrite), then mark the counts."""
    inferior = gdb.selected_inferior()
    saved = [[start, bytes(inferior.read_memory(start, end - start)).hex()]
             for start, end in plan["entries"]]
    for address, data in plan["writes"]:
        data = bytes.fromhex(data)
        inferior.write_memory(address, data)
        if bytes(inferior.read_memory(address, len(data))) != data:
            record["error"] = f"write at {address:#x} did not take"
            return False
    record["applied"] = True
    record["saved"] = saved
    record["bytes"] = sum(len(d) // 2 for _, d in plan["writes"])
    record["icount"] = engine.icount_now()
    engine.mark()
    return True


# Kernel stack sizes: 8 KiB on the lab kernel and 2.x i386, 16 KiB on x86_64 (THREAD_SIZE).
_STACK_SIZE = {4: 0x2000, 8: 0x4000}


def _replaced_function_running(plan, max_frames=64):
    """The address inside a replaced function that the stopped CPU is at or will
    return to, or None: the pc, then the kernel stack. With 4-byte words (the
    lab kernel, which keeps frame pointers) the frame-pointer chain is followed;
    it ends at the first saved %ebp outside the current kernel stack (the
    user's, or an entry frame). With 8-byte words (x86_64: Debian's kernels
    unwind with ORC and keep no frame pointers) every word from the stack
    pointer to the top of its stack is taken as a possible return address:
    a stale word may make the check wait for another stop, never miss a frame."""
    ranges = plan.get("ranges") or plan["entries"]

    def inside(addr):
        return any(start <= addr < end for start, end in ranges)
    pc = _reg(_PC)
    if inside(pc):
        return pc
    if _reg("$cs") & 3 == 3:              # user mode: no kernel function is running
        return None
    inferior = gdb.selected_inferior()
    word, sp = ENGINE.word(), _reg(_SP)
    size = _STACK_SIZE[word]
    top = (sp & ~(size - 1)) + size
    if word == 8:
        data = bytes(inferior.read_memory(sp, top - sp))
        return next((w for w in (int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data) - 7, 8))
                     if inside(w)), None)
    ebp = _reg("$ebp")
    stack = top - size
    for _ in range(max_frames):
        if not (stack <= ebp < top - 8):
            break
        frame = bytes(inferior.read_memory(ebp, 8))
        ebp, ret = int.from_bytes(frame[:4], "little"), int.from_bytes(frame[4:], "little")
        if inside(ret):
            return ret
    return None


class LivePatchBreakpoint(gdb.Breakpoint):
    """Writes a live patch at its first hit, then marks the counts (once).

    PLAN is JSON: {"writes": [[address, "hex bytes"], ...] (replacement code
    first, then the jmp over each old entry), "functions": [...],
    "entries": [[start, end], ...], "unpatch": bool}. With "unpatch", the
    breakpoint's second hit puts the old entries back and marks again. The writes happen only with the CPU in
    user mode (CPL 3): on this single-CPU kernel no kernel function is then
    running, so none is half-way through a function being replaced. It all
    happens inside this stop, with no round trip to another process, so the
    guest is stopped for as short a time as GDB allows. A patch that cannot
    go in is never half-written and never stops the guest: the error is
    recorded (`patch` in the JSON snapshot) and the guest runs on unpatched.
    """

    def __init__(self, engine, location, plan):
        super().__init__(location, internal=True)
        self.silent = True
        self.engine = engine
        self.plan = plan

    def stop(self):
        engine = self.engine
        if engine.patch is not None and engine.patch.get("applied") and self.plan.get("unpatch"):
            return self._unpatch()
        t0 = time.monotonic()
        self.enabled = bool(self.plan.get("unpatch"))     # the next hit takes the patch out
        record = {"applied": False, "pc": _reg(_PC), "cs": _reg("$cs")}
        engine.patch = record
        try:
            if record["cs"] & 3 != 3:
                record["error"] = f"the guest is not in user mode (cs={record['cs']:#x})"
                return False
            for start, end in self.plan["entries"]:
                if start <= record["pc"] < end:
                    record["error"] = f"the guest is inside a replaced function ({record['pc']:#x})"
                    return False
            _apply_plan(engine, self.plan, record)
        except Exception as exc:      # a failed write must not look like a patched run
            record["error"] = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            record["stop_s"] = round(time.monotonic() - t0, 6)
        return False


    def _unpatch(self):
        """The second mark (--unpatch-at): put the old entries back, mark again."""
        engine, record = self.engine, self.engine.patch
        t0 = time.monotonic()
        self.enabled = False
        try:
            _restore(record)
            record["unpatch_icount"] = engine.icount_now()
            engine.mark()
        except Exception as exc:
            record["error"] = f"unpatching: {type(exc).__name__}: {exc}"
        record["unpatch_stop_s"] = round(time.monotonic() - t0, 6)
        return False


def _restore(record):
    inferior = gdb.selected_inferior()
    for address, data in record["saved"]:
        inferior.write_memory(address, bytes.fromhex(data))
        if bytes(inferior.read_memory(address, len(data) // 2)).hex() != data:
            raise gdb.GdbError(f"faultprobe: restoring {address:#x} did not take")
    record["unpatched"] = True


class IcountBreakpoint(gdb.Breakpoint):
    """Notes the guest instruction count at its first hit under NAME, then disables itself."""

    def __init__(self, engine, name, location):
        super().__init__(location, internal=True)
        self.silent = True
        self.engine = engine
        self.name = name

    def stop(self):
        self.enabled = False
        self.engine.icount_marks[self.name] = self.engine.icount_now()
        return False


ENGINE = ProbeEngine()


class FaultprobeCommand(gdb.Command):
    """Count kernel fault-path functions without stopping the guest.

Usage: faultprobe add ROLE LOCATION [SYMBOL]  -- count hits at LOCATION (a symbol or *ADDRESS)
       faultprobe arm LOCATION                -- hits before LOCATION first runs count as boot
       faultprobe stats                       -- print the counts
       faultprobe json [FILE]                 -- the counts as JSON (to FILE if given)
       faultprobe trace [ICOUNT [SAMPLE [ROLE]]] -- follow each fault from entry to return
       faultprobe mark                         -- split counts here (snapshot shows before/after)
       faultprobe livepatch LOCATION PLAN      -- at LOCATION's first hit: write PLAN, then mark
       faultprobe icount-at NAME LOCATION [ICOUNT] -- note the instruction count at LOCATION's first hit
       faultprobe livepatch-now PLAN           -- write PLAN now if no replaced function runs, then mark
       faultprobe unpatch                      -- put back the bytes the patch's jmps overwrote
       faultprobe timeline                     -- keep each traced path's instruction count (for plots)
       faultprobe index FILE                   -- write every costed fault's entry count, shape, cost
       faultprobe keyframes INTERVAL [MOST [QMP]] -- savevm at a fault entry every INTERVAL instructions
       faultprobe dedup on|off                -- filter duplicate stop reports (default on)
       faultprobe wordsize 4|8                -- the kernel's address size (default: GDB's pointer size)
       faultprobe reset | enable | disable | clear
ROLE is a free-form name such as "fault entry"; quote it when it has spaces."""

    def __init__(self):
        super().__init__("faultprobe", gdb.COMMAND_USER, prefix=True)

    def invoke(self, arg, from_tty):
        gdb.execute("help faultprobe", to_string=False)


class _Sub(gdb.Command):
    def __init__(self, name):
        super().__init__(f"faultprobe {name}", gdb.COMMAND_USER)


class AddCommand(_Sub):
    """Add a counting probe: faultprobe add ROLE LOCATION [SYMBOL]."""

    def __init__(self):
        super().__init__("add")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) not in (2, 3):
            raise gdb.GdbError("usage: faultprobe add ROLE LOCATION [SYMBOL]")
        bp = ENGINE.add(argv[0], argv[1], argv[2] if len(argv) == 3 else None)
        addr = bp.address()
        print(f"faultprobe: {argv[0]} at {argv[1]}" + (f" ({addr:#x})" if addr is not None else ""))


class ArmCommand(_Sub):
    """Count hits as 'boot' until LOCATION first executes: faultprobe arm LOCATION."""

    def __init__(self):
        super().__init__("arm")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) != 1:
            raise gdb.GdbError("usage: faultprobe arm LOCATION")
        ENGINE.arm_at(argv[0])


class StatsCommand(_Sub):
    """Print each probe's hits (boot, workload, duplicates filtered)."""

    def __init__(self):
        super().__init__("stats")

    def invoke(self, arg, from_tty):
        snap = ENGINE.snapshot()
        print(f"{'role':<20} {'symbol':<28} {'boot':>9} {'workload':>10} {'dups':>5}")
        for p in snap["probes"]:
            print(f"{p['role']:<20} {(p['symbol'] or p['location']):<28} "
                  f"{p['hits']['boot']:>9} {p['hits']['workload']:>10} {p['duplicates']:>5}")
        print(f"total {snap['total_hits']} hits in {snap['elapsed_s']} s, phase {snap['phase']}")


class JsonCommand(_Sub):
    """Print the counts as JSON, or write them to FILE: faultprobe json [FILE]."""

    def __init__(self):
        super().__init__("json")

    def invoke(self, arg, from_tty):
        text = json.dumps(ENGINE.snapshot())
        argv = gdb.string_to_argv(arg)
        if argv:
            with open(argv[0], "w") as f:
                f.write(text)
        else:
            print(text)


class TraceCommand(_Sub):
    """Trace fault paths: faultprobe trace [ICOUNT [SAMPLE [ENTRY_ROLE]]].

Each fault entry (probes of ENTRY_ROLE, default "fault entry") opens a path;
the other probes hit before it returns are its events. With ICOUNT, every
SAMPLEth path is costed in guest instructions, read at its entry and its
return: ICOUNT is "monitor" (`monitor info replay`, QEMU under record/replay:
the cheap way) or a QMP socket (any QEMU under -icount). Use "-" for none."""

    def __init__(self):
        super().__init__("trace")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        qmp = argv[0] if argv and argv[0] != "-" else None
        sample = int(argv[1]) if len(argv) > 1 else 1
        role = argv[2] if len(argv) > 2 else "fault entry"
        if not any(bp.role == role for bp in ENGINE.probes):
            raise gdb.GdbError(f"faultprobe: no probe has the role '{role}' to open paths")
        icount = icount_reader(qmp) if qmp else None
        if ENGINE.tracer is not None:
            ENGINE.tracer.close()
        ENGINE.tracer = PathTracer(ENGINE, role, icount, sample)
        ENGINE.icount_reader = icount


class TimelineCommand(_Sub):
    """Keep each costed path's entry instruction count and events (for a timeline plot)."""

    def __init__(self):
        super().__init__("timeline")

    def invoke(self, arg, from_tty):
        if ENGINE.tracer is None or ENGINE.tracer.icount is None:
            raise gdb.GdbError("faultprobe: a timeline needs `faultprobe trace ICOUNT` first")
        ENGINE.tracer.timeline = []


class IndexCommand(_Sub):
    """Write every costed fault's entry instruction count, shape and cost to FILE (gzip'd JSON):
faultprobe index FILE."""

    def __init__(self):
        super().__init__("index")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) != 1:
            raise gdb.GdbError("usage: faultprobe index FILE")
        if ENGINE.tracer is None or ENGINE.tracer.icount is None:
            raise gdb.GdbError("faultprobe: an index needs `faultprobe trace ICOUNT` first")
        print(f"faultprobe: {ENGINE.tracer.write_index(argv[0])} faults indexed")


class KeyframesCommand(_Sub):
    """Save a VM snapshot (QEMU savevm, over QMP) at a workload fault's entry every INTERVAL
guest instructions, at most MOST of them (default 16): faultprobe keyframes INTERVAL [MOST [QMP]].
QMP: the socket of QEMU's monitor (default: the tracer's, when it reads over QMP). For a
replay whose recording is kept: reopening it later starts from the nearest one."""

    def __init__(self):
        super().__init__("keyframes")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) not in (1, 2, 3):
            raise gdb.GdbError("usage: faultprobe keyframes INTERVAL [MOST [QMP]]")
        tracer = ENGINE.tracer
        if tracer is None or tracer.icount is None:
            raise gdb.GdbError("faultprobe: keyframes need `faultprobe trace ICOUNT` first")
        if len(argv) > 2:
            monitor = QmpIcount(argv[2])
        elif isinstance(tracer.icount, QmpIcount):
            monitor = tracer.icount
        else:
            raise gdb.GdbError("faultprobe: keyframes need a QMP socket (faultprobe keyframes INTERVAL MOST QMP)")
        tracer.keyframes(int(argv[0]), int(argv[1]) if len(argv) > 1 else 16, monitor)


class DedupCommand(_Sub):
    """Filter duplicate stop reports: faultprobe dedup on|off (default on).

QEMU's gdbstub can report one hit twice while the guest runs live; the filter
compares registers at every stop to spot that. Turn it off only where QEMU
does not duplicate (a record/replay replay) to make each stop cheaper."""

    def __init__(self):
        super().__init__("dedup")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if argv not in (["on"], ["off"]):
            raise gdb.GdbError("usage: faultprobe dedup on|off")
        ENGINE.dedup = argv[0] == "on"
        ENGINE.last_bp = ENGINE.last_regs = ENGINE.stop_icount = None


class WordSizeCommand(_Sub):
    """The kernel's address size in bytes: faultprobe wordsize 4|8 (default: GDB's pointer size).

The path tracer reads a return address this wide at the stack pointer. It
differs from GDB's pointer size only for an i386 kernel on qemu-system-x86_64,
whose gdbstub sends 64-bit registers."""

    def __init__(self):
        super().__init__("wordsize")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if argv not in (["4"], ["8"]):
            raise gdb.GdbError("usage: faultprobe wordsize 4|8")
        ENGINE.word_size = int(argv[0])


class ResetCommand(_Sub):
    """Zero every probe's counts."""

    def __init__(self):
        super().__init__("reset")

    def invoke(self, arg, from_tty):
        ENGINE.reset()


class EnableCommand(_Sub):
    """Enable every probe."""

    def __init__(self):
        super().__init__("enable")

    def invoke(self, arg, from_tty):
        ENGINE.set_enabled(True)


class DisableCommand(_Sub):
    """Disable every probe (counts are kept)."""

    def __init__(self):
        super().__init__("disable")

    def invoke(self, arg, from_tty):
        ENGINE.set_enabled(False)


class ClearCommand(_Sub):
    """Delete every probe and its counts."""

    def __init__(self):
        super().__init__("clear")

    def invoke(self, arg, from_tty):
        ENGINE.clear()


class MarkCommand(_Sub):
    """Split the counts here: the JSON snapshot gets each count as it is now ("mark")."""

    def __init__(self):
        super().__init__("mark")

    def invoke(self, arg, from_tty):
        ENGINE.mark()


class LivePatchCommand(_Sub):
    """Apply a live patch at LOCATION's first hit: faultprobe livepatch LOCATION PLAN.json."""

    def __init__(self):
        super().__init__("livepatch")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) != 2:
            raise gdb.GdbError("usage: faultprobe livepatch LOCATION PLAN.json")
        with open(argv[1]) as f:
            plan = json.load(f)
        LivePatchBreakpoint(ENGINE, argv[0], plan)


class IcountAtCommand(_Sub):
    """Note the instruction count at LOCATION's first hit: faultprobe icount-at NAME LOCATION [ICOUNT].
ICOUNT as for `faultprobe trace` ("monitor" or a QMP socket), when the tracer does not read it already."""

    def __init__(self):
        super().__init__("icount-at")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) not in (2, 3):
            raise gdb.GdbError("usage: faultprobe icount-at NAME LOCATION [monitor|QMP_SOCKET]")
        if len(argv) == 3 and ENGINE.icount_reader is None and ENGINE.own_icount is None:
            ENGINE.own_icount = icount_reader(argv[2])
        IcountBreakpoint(ENGINE, argv[0], argv[1])


class LivePatchNowCommand(_Sub):
    """Apply a live patch now, if no CPU is inside a replaced function: faultprobe livepatch-now PLAN.json.

Fails (an error naming where the CPU is) when the stopped CPU is in a replaced
function or will return into one; the caller lets the guest run a little and
tries again."""

    def __init__(self):
        super().__init__("livepatch-now")

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if len(argv) != 1:
            raise gdb.GdbError("usage: faultprobe livepatch-now PLAN.json")
        with open(argv[0]) as f:
            plan = json.load(f)
        busy = _replaced_function_running(plan)
        if busy is not None:
            raise gdb.GdbError(f"faultprobe: not quiescent: a replaced function is running ({busy:#x})")
        record = {"applied": False, "pc": _reg(_PC), "cs": _reg("$cs")}
        ENGINE.patch = record
        if not _apply_plan(ENGINE, plan, record):
            raise gdb.GdbError(f"faultprobe: {record['error']}")


class UnpatchCommand(_Sub):
    """Put back what the live patch's jmps overwrote: faultprobe unpatch."""

    def __init__(self):
        super().__init__("unpatch")

    def invoke(self, arg, from_tty):
        record = ENGINE.patch or {}
        if not record.get("applied") or record.get("unpatched"):
            return
        _restore(record)


FaultprobeCommand()
for _cls in (AddCommand, ArmCommand, StatsCommand, JsonCommand, TraceCommand, DedupCommand,
             ResetCommand, EnableCommand, DisableCommand, ClearCommand, MarkCommand, LivePatchCommand,
             IcountAtCommand, LivePatchNowCommand, UnpatchCommand, TimelineCommand, WordSizeCommand,
             IndexCommand, KeyframesCommand):
    _cls()
