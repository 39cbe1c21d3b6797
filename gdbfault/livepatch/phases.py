"""What a live patch changed: the run's counts, paths and checks cut at the patch (and unpatch) moments.

The in-GDB engine (or the plugin) snapshots every count at each mark; the
phases are the differences between marks: "before" the patch, "after" it,
and with --unpatch-at "after_unpatch". Each phase is checked against the
guest's truth for its iterations. A replay must have applied the same patch
at the same guest instruction as its recording (`check_consistency`), and
the recording's one stop moved the guest's clock by an amount the replay
measures (`timing_perturbation`).
"""
import dataclasses

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import REPO
from gdbfault.base.userfiles import read_input_bytes
from gdbfault.model.paths import summarise_paths, user_fault_searches
from gdbfault.model.result import LivePatch, Phase
from gdbfault.model.roles import SEARCH
from gdbfault.model.truth import check_counts

__all__ = ["PATCH_PHASES", "fill_live_patch", "timeline_windows", "live_patch_checks", "check_consistency",
           "timing_perturbation"]

_SEED_PATCH = REPO / "qemu" / "kernel" / "patches" / "0001-user-faults-skip-exception-table.patch"
PATCH_PHASES = LivePatch.PHASES


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
            if read_input_bytes(patch.source, "patch") == _SEED_PATCH.read_bytes():
                return "lab-patched"
        except (OSError, GdbfaultError):
            pass
    return None


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
    names = PATCH_PHASES[:len(marks) + 1]
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
