"""A live patch inside one run: when it is applied, and what it changed.

The patch goes in at one deterministic point: the workload is started with
`mark=N` and calls `gdbfault_mark()` once, after N iterations, in user mode
(qemu/workloads/driver.c). `faultprobe livepatch` has a breakpoint there
that writes the replacement code and the jmps and marks the counts, all in
one stop inside GDB (gdbscripts/faultprobe.py).

Under record/replay (the default) debugger writes are not part of the
recording, so the recording run gets GDB too, with only that breakpoint and
one at `rt_finish` (after the workload's timed loop): the same bytes are
written at the same guest instruction in the recording and in the replay.
Consistency is proved by instruction counts at a fixed point, not by the
guest's summary (a replay that skipped the write would still print the
recorded one): the count at `rt_finish` must be equal in both. The
recording's one stop moves the guest's clock (QEMU's virtual clock follows
real time while stopped); the replay measures by how much: the instructions
executed between the workload's two rdtsc reads against the cycles the guest
counted between them.
"""
import dataclasses
import json
import re
import subprocess
import time

from pathlib import Path

from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.base.locations import REPO
from gdbfault.machine.gdbmi import Debugger, mi_quote
from gdbfault.model.paths import summarise_paths, user_fault_searches
from gdbfault.probing.gdb_session import connect, lend_qmp, load_probe_engine, prepare_debugger
from gdbfault.model.roles import SEARCH
from gdbfault.machine.config import record_config
from gdbfault.machine.qemu import Machine, describe_exit, private_dir
from gdbfault.model.result import LivePatch, Phase, Record
from gdbfault.model.truth import check_counts

__all__ = ["prepare", "WorkloadPoints", "arm", "record_with_patch", "fill_live_patch",
           "live_patch_checks", "check_consistency", "ReplayWatch", "timing_perturbation",
           "PluginPatcher", "apply_now"]

_SEED_PATCH = REPO / "qemu" / "kernel" / "patches" / "0001-user-faults-skip-exception-table.patch"


def prepare(spec, kernel, system_map):
    """Check the options and build the patch: (LivePatch, the iteration it goes in at)."""
    from gdbfault.livepatch.build import prepare_live_patch
    lp = spec.live_patch
    if spec.iterations is None:
        raise GdbfaultError("--live-patch needs --iterations (the patch moment is an iteration)")
    at = lp.at if lp.at is not None else spec.iterations // 2
    if at < 0 or at > spec.iterations:
        raise GdbfaultError(f"--patch-at {at} is beyond --iterations {spec.iterations}")
    if lp.unpatch_at is not None:
        if spec.backend != "gdb":
            raise GdbfaultError("--unpatch-at works with --backend gdb only")
        if not at < lp.unpatch_at <= spec.iterations:
            raise GdbfaultError(f"--unpatch-at {lp.unpatch_at} must be after --patch-at {at} and within "
                                f"--iterations {spec.iterations}")
    if not spec.workload:
        raise GdbfaultError("--live-patch needs a workload (the patch moment is one of its iterations)")
    patch = prepare_live_patch(lp.file, kernel, system_map,
                               spec.variant if spec.kernel == "lab" else None)
    return patch, at


class WorkloadPoints:
    """Fixed points of the workload binary: its mark, its two rdtsc reads, its end."""

    def __init__(self, elf):
        from elftools.elf.elffile import ELFFile
        with open(elf, "rb") as f:
            symtab = ELFFile(f).get_section_by_name(".symtab")
            syms = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}
        for name in ("gdbfault_mark", "rt_finish", "rt_main"):
            if name not in syms:
                raise GdbfaultError(f"the workload {elf} has no '{name}' (rebuild it: make build)")
        self.mark, self.end = syms["gdbfault_mark"], syms["rt_finish"]
        out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "--disassemble=rt_main", str(elf)],
                             capture_output=True, text=True).stdout
        self.rdtsc = [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):\s+rdtsc", out, re.M)]
        if len(self.rdtsc) != 2:
            self.rdtsc = []           # timing is then not measured, the rest still works


def arm(dbg, plan_path, points, qmp_socket, timing=True):
    """The in-GDB side: the patch at the mark, instruction counts at fixed points."""
    qmp = mi_quote(str(qmp_socket)) if qmp_socket else ""
    dbg.console(f"faultprobe icount-at end *{points.end:#x} {qmp}".rstrip())
    if timing and len(points.rdtsc) == 2:
        dbg.console(f"faultprobe icount-at loop_start *{points.rdtsc[0]:#x} {qmp}".rstrip())
        dbg.console(f"faultprobe icount-at loop_end *{points.rdtsc[1]:#x} {qmp}".rstrip())
    dbg.console(f"faultprobe livepatch *{points.mark:#x} {mi_quote(str(plan_path))}")


def record_with_patch(spec, config, result, cleanup, plan_path, points, gdb_prepare, deadline=None):
    """The recording run, with GDB attached only to apply the patch (see module doc)."""
    rec_dir = private_dir("gdbfault-rec-")
    cleanup.append(rec_dir)
    record_file = rec_dir / "guest.rr"
    rec = Machine(record_config(config, record_file, halted=True), run_dir=rec_dir)
    dbg = None
    t0 = time.monotonic()
    try:
        rec.start()
        dbg = Debugger(spec.gdb)
        gdb_prepare(dbg, str(rec.gdb_socket))
        arm(dbg, plan_path, points, rec.probe_qmp_socket, timing=False)
        dbg.mi("-exec-continue")
        if deadline is None:
            deadline = t0 + spec.timeout_s
        status = None
        while status is None:
            status = rec.wait(0.2)
            if status is None and (time.monotonic() > deadline or not dbg.alive):
                raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s while "
                                 "recording the live patch" if dbg.alive else
                                 f"GDB died while recording: {dbg.last_log() or 'no message'}")
        snap_path = rec_dir / "record-counts.json"
        dbg.console(f"faultprobe json {snap_path}")
        snap = json.loads(snap_path.read_text())
        serial = rec.serial_output()
        rec.check_recording_exit(status)
    finally:
        if dbg is not None:
            dbg.close()
        rec.close(keep_dir=True)
    result.record = Record(exit_status=status, exit=describe_exit(status),
                           wall_s=round(time.monotonic() - t0, 3),
                           live_patch={"patch": snap.get("patch"), "icount_marks": snap.get("icount_marks", {})})
    patch = snap.get("patch") or {}
    if not patch.get("applied"):
        raise GdbfaultError("the live patch was not applied while recording: "
                            f"{patch.get('error') or 'the workload never reached its mark'}")
    return record_file, {"status": status, "serial": serial}


def _phase_guest(guest, iterations, phase_iterations):
    """The guest's truth for part of the run: every workload counts its events per iteration."""
    out = {}
    for key in ("sigsegv", "efault", "demand_pages"):
        v = int(guest.get(key, 0))
        if v not in (0, iterations):
            return None
        out[key] = phase_iterations if v else 0
    return out


def _phase_checks(probes, hits, guest, model, drop_search):
    return check_counts([(p.role, p.symbol, hits[p.symbol]) for p in probes], guest, model,
                        skip_roles=(SEARCH,) if drop_search else ())


def _after_model(result, patch):
    """The kernel the patch makes, when we know its fault path (vanilla + the seed patch)."""
    k = result.kernel
    if k.lab and k.variant == "vanilla" and patch.kind == "patch":
        try:
            if Path(patch.source).read_bytes() == _SEED_PATCH.read_bytes():
                return "lab-patched"
        except OSError:
            pass
    return None


PHASE_NAMES = ("before", "after", "after_unpatch")


def fill_live_patch(result, snap, patch, at, iterations, unpatch_at=None):
    """result.live_patch (a LivePatch): hits, paths and checks per phase, and the patch line's facts.

    The phases are cut at the engine's marks: "before" the patch, "after" it,
    and with --unpatch-at "after_unpatch" (the old entries back in place).
    """
    p = (snap or {}).get("patch") or {}
    lp = LivePatch(at_iteration=at, source=patch.source, kind=patch.kind,
                   functions=[f.describe() for f in patch.functions],
                   code={"address": patch.code_address, "bytes": len(patch.code)},
                   applied=bool(p.get("applied")), error=p.get("error"),
                   icount=p.get("icount"), stop_s=p.get("stop_s"),
                   icount_marks=(snap or {}).get("icount_marks", {}),
                   unpatched=bool(p.get("unpatched")))
    if unpatch_at is not None:
        lp.unpatch_at_iteration = unpatch_at
        lp.unpatch_icount = p.get("unpatch_icount")
    result.live_patch = lp
    marks = (snap or {}).get("marks") or ([snap["mark"]] if (snap or {}).get("mark") else [])
    if not marks:
        return lp
    cuts = [at, unpatch_at][:len(marks)]
    if at is not None and iterations is not None:
        bounds = [0] + cuts + [iterations]
        iters = [bounds[i + 1] - bounds[i] for i in range(len(cuts) + 1)]
    else:
        iters = [None] * (len(marks) + 1)
    names = PHASE_NAMES[:len(marks) + 1]
    phases = {name: Phase(iterations=n) for name, n in zip(names, iters)}
    by_mark = [{m["address"]: m["hits"]["workload"] for m in mark["probes"]} for mark in marks]
    for probe in result.probes:
        levels = [0] + [m.get(probe.address, 0) for m in by_mark] + [probe.hits.workload]
        for k, name in enumerate(names):
            n = levels[k + 1] - levels[k]
            phases[name].hits[probe.symbol] = n
            phases[name].per_iteration[probe.symbol] = round(n / iters[k], 4) if iters[k] else None
    trace = snap.get("trace")
    if trace and all("trace" in m for m in marks):
        at_marks = [{(m["phase"], tuple(m["events"])): m for m in mark["trace"]["paths"]} for mark in marks]
        split = {name: [] for name in names}
        for path in trace["paths"]:
            key = (path["phase"], tuple(path["events"]))
            levels = [{"count": 0, "costed": 0}] + \
                [am.get(key, {"count": 0, "costed": 0}) for am in at_marks] + \
                [{"count": path["count"], "costed": len(path["costs"])}]
            for k, name in enumerate(names):
                lo, hi = levels[k], levels[k + 1]
                split[name].append(dict(path, count=hi["count"] - lo["count"],
                                        costs=path["costs"][lo["costed"]:hi["costed"]]))
        for name in names:
            rows = summarise_paths({"paths": [x for x in split[name] if x["count"]], "open": []})
            phases[name].paths = rows
            phases[name].user_fault_searches = user_fault_searches(rows)
        last = phases[names[-1]]
        last.paths = last.paths + summarise_paths({"paths": [], "open": trace.get("open", [])})
    if trace and trace.get("timeline"):
        lp.timeline = timeline_windows(trace["timeline"])
    for name, phase in phases.items():
        setattr(lp, name, phase)
    return lp


def timeline_windows(points, windows=60):
    """Hits of each role per window of guest instructions, from [[entry icount, [roles]]]."""
    if not points:
        return None
    first, last = min(p[0] for p in points), max(p[0] for p in points)
    width = max(1, -(-(last - first + 1) // windows))
    roles = sorted({r for _, ev in points for r in ev} | {"fault entry"})
    counts = {r: [0] * windows for r in roles}
    for icount, events in points:
        w = min(windows - 1, (icount - first) // width)
        counts["fault entry"][w] += 1
        for r in events:
            counts[r][w] += 1
    return {"start": first, "width": width, "hits": counts}


def live_patch_checks(result, patch):
    """Per-phase checks against the guest's truth, plus the totals they add up to."""
    lp, guest = result.live_patch, result.guest
    if not guest or lp is None or lp.before is None:
        return result.checks
    total_iterations = int(guest.get("iterations", 0))
    model = result.kernel.model
    after_model = _after_model(result, patch)
    rows = []
    for name, m, drop in (("before", model, False), ("after", after_model or model, after_model is None),
                          ("after_unpatch", model, False)):
        phase = getattr(lp, name)
        if phase is None:
            continue
        g = _phase_guest(guest, total_iterations, phase.iterations)
        if g is None or not result.kernel.lab:
            return result.checks
        phase_rows = _phase_checks(result.probes, phase.hits, g, m, drop)
        phase.checks = phase_rows
        rows += [dataclasses.replace(r, phase=name) for r in phase_rows]
    # the run's totals: the sum of what each phase must count
    totals = {}
    for r in rows:
        t = totals.setdefault(r.symbol, dataclasses.replace(r, phase="total", expected=0, counted=0))
        t.expected += r.expected
    for p in result.probes:
        if p.symbol in totals:
            t = totals[p.symbol]
            t.counted = p.hits.workload
            t.ok = t.counted == t.expected
    return list(totals.values()) + rows


class ReplayWatch:
    """Fails a replay that stopped moving: one that diverged from its recording.

    A replay that runs other code than was recorded waits for recorded events
    that never come: its instruction count stands still while QEMU runs (the
    lab kernel never idles that long). Seen with the write left out of the
    replay: stuck after the patch point until the run's timeout.
    """

    STALL_S = 15.0

    def __init__(self, machine, result):
        self.machine = machine
        self.result = result
        self.last = None
        self.since = time.monotonic()

    def __call__(self):
        from qemu.qmp import QMPError
        try:
            now = self.machine.replay_icount()
        except (OSError, EOFError, QMPError):
            return                    # QMP gone: QEMU's own end is reported instead
        if now != self.last:
            self.last, self.since = now, time.monotonic()
            return
        if time.monotonic() - self.since > self.STALL_S:
            record = self.result.record
            recorded = ((record.live_patch if record is not None else None) or {}).get("icount_marks", {})
            raise GdbfaultError(f"the replay diverged from the recording: it stopped at guest instruction "
                                f"{now:,} for {self.STALL_S:.0f} s (the recording reached the workload's end "
                                f"at {recorded.get('end', '?'):,})" if isinstance(recorded.get("end"), int) else
                                f"the replay diverged from the recording: it stopped at guest instruction {now:,}")


def check_consistency(result, replay_snap):
    """The replay must have applied the same patch at the same point and run the same code."""
    lp = result.live_patch
    rec = result.record.live_patch if result.record is not None else None
    replay_patch = (replay_snap or {}).get("patch") or {}
    if not replay_patch.get("applied"):
        raise GdbfaultError("the live patch was not applied in the replay: "
                            f"{replay_patch.get('error') or 'the workload never reached its mark'}")
    if rec is None:                      # --live: nothing to compare with
        return
    rec_end = rec["icount_marks"].get("end")
    rep_end = lp.icount_marks.get("end")
    lp.consistency = {"record_icount_at_patch": rec["patch"].get("icount"),
                      "replay_icount_at_patch": replay_patch.get("icount"),
                      "record_icount_at_end": rec_end, "replay_icount_at_end": rep_end,
                      "same": rec_end is not None and rec_end == rep_end}
    if not lp.consistency["same"]:
        raise GdbfaultError(f"the replay diverged from the recording: {rep_end} guest instructions at "
                            f"the workload's end against {rec_end} recorded")


def timing_perturbation(result):
    """Cycles the guest counted over its loop minus instructions it executed there (icount shift=0)."""
    lp, guest = result.live_patch, result.guest or {}
    marks = (lp.icount_marks if lp is not None else None) or {}
    if "loop_start" not in marks or "loop_end" not in marks or "cycles" not in guest:
        return None
    executed = marks["loop_end"] - marks["loop_start"]
    extra = int(guest["cycles"]) - executed
    record = result.record
    recorded = ((record.live_patch if record is not None else None) or {}).get("patch") or {}
    lp.timing = {"guest_cycles": int(guest["cycles"]), "instructions": executed,
                 "extra_cycles": extra, "stop_s": recorded.get("stop_s", lp.stop_s)}
    return lp.timing


def apply_now(dbg, patch, work, tries=50):
    """Attach mode: patch the stopped guest as soon as no CPU is inside a replaced
    function (checked in GDB: pc and the kernel stack's return addresses); while
    one is, let the guest run a moment and look again."""
    from gdbfault.machine.gdbmi import GdbCommandError
    plan = patch.write_plan(Path(work) / "livepatch-plan.json")
    for _ in range(tries):
        try:
            dbg.console(f"faultprobe livepatch-now {mi_quote(str(plan))}")
            return
        except GdbCommandError as exc:
            if "while the target is running" in str(exc):
                # the interrupt landed while GDB stepped over a probe (it settles) or was lost
                time.sleep(0.1)
                try:
                    dbg.mi("-exec-interrupt")
                except GdbCommandError:
                    pass
                continue
            if "not quiescent" not in str(exc):
                raise GdbfaultError(f"the live patch could not be applied: {exc}") from None
        dbg.mi("-exec-continue")
        time.sleep(0.02)
        dbg.mi("-exec-interrupt")
        dbg.wait_event(lambda r: r.get("message") == "stopped"
                       and (r.get("payload") or {}).get("signal-name") == "SIGINT", 10.0)
    raise GdbfaultError(f"the live patch was not applied: a replaced function was running at each of "
                        f"{tries} stops")


class PluginPatcher:
    """--backend plugin: GDB connects only to apply the patch; the plugin counts.

    The plugin gets a "mark" probe at the workload's mark, where it snapshots
    every count and tags the paths opened after it; the GDB breakpoint at the
    same address writes the patch before that instruction runs.
    """

    def __init__(self, spec, live, initrd):
        self.spec = spec
        self.patch, self.at = live
        self.points = WorkloadPoints(initrd)
        self.dbg = None
        self.run_dir = None

    def plugin_probes(self):
        return [(self.points.mark, "mark", "gdbfault_mark")]

    def attach(self, machine, kernel):
        self.run_dir = machine.run_dir
        plan = self.patch.write_plan(machine.run_dir / "livepatch-plan.json")
        self.dbg = Debugger(self.spec.gdb)
        prepare_debugger(self.dbg, kernel)
        connect(self.dbg, str(machine.gdb_socket))
        load_probe_engine(self.dbg, [], None)
        qmp = None
        if self.spec.icount:
            lend_qmp(self.dbg)
            qmp = machine.probe_qmp_socket
        arm(self.dbg, plan, self.points, qmp, timing=False)
        self.dbg.mi("-exec-continue")

    def finish(self):
        """The in-GDB record of the patch (after QEMU ended); GDB is closed."""
        if self.dbg is None or not self.dbg.alive:
            return {}
        path = self.run_dir / "livepatch-counts.json"
        self.dbg.console(f"faultprobe json {path}")
        return json.loads(path.read_text())

    def close(self):
        if self.dbg is not None:
            self.dbg.close()
            self.dbg = None

    def fill(self, result, data, snap, roles_by_name):
        """result.live_patch from the plugin's at_mark counts and after_mark paths.

        roles_by_name: the plugin's probe names (its result's keys) -> roles."""
        iterations = int(result.iterations)
        lp = fill_live_patch(result, snap, self.patch, self.at, iterations)   # the patch's own facts
        if not lp.applied:
            raise GdbfaultError(f"the live patch was not applied: {lp.error or 'the workload never reached its mark'}")
        if not data.get("marked"):
            raise GdbfaultError("the plugin never saw the workload's mark")
        iters = {"before": self.at, "after": iterations - self.at}
        phases = {name: Phase(iterations=n) for name, n in iters.items()}
        name_of = {role: name for name, role in roles_by_name.items()}
        for probe in result.probes:
            h = data["hits"].get(name_of.get(probe.role, probe.symbol), {})
            before = int(h.get("at_mark", 0))
            for name, v in (("before", before), ("after", probe.hits.workload - before)):
                phases[name].hits[probe.symbol] = v
                phases[name].per_iteration[probe.symbol] = round(v / iters[name], 4) if iters[name] else None
        if result.paths is not None:
            for name, after in (("before", False), ("after", True)):
                paths = [{"phase": p["phase"], "events": [roles_by_name.get(e, e) for e in p["events"]],
                          "cost_hist": p["cost_hist"]}
                         for p in data["paths"] if bool(p.get("after_mark")) == after]
                rows = summarise_paths({"paths": paths, "open": []})
                phases[name].paths = rows
                phases[name].user_fault_searches = user_fault_searches(rows)
        lp.before, lp.after = phases["before"], phases["after"]
        result.checks = live_patch_checks(result, self.patch)
        return lp
