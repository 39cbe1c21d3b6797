"""A live patch plugged into a run: `live_patch_hooks(plan)` gives the backend's RunHooks that apply it.

The patch goes in at one deterministic point: the workload is started with
`mark=N` and calls `gdbfault_mark()` once, after N iterations, in user mode
(qemu/workloads/driver.c). `faultprobe livepatch` has a breakpoint there
that writes the replacement code and the jmps and marks the counts, all in
one stop inside GDB (gdbscripts/faultprobe.py).

- GDB backend (`PatchAtMark`): under record/replay debugger writes are not
  part of the recording, so the recording run gets GDB too, with only that
  breakpoint and one at `rt_finish` (after the workload's timed loop): the
  same bytes are written at the same guest instruction in the recording and
  in the replay. Consistency is proved by instruction counts at a fixed
  point, not by the guest's summary (a replay that skipped the write would
  still print the recorded one): the count at `rt_finish` must be equal in
  both. The recording's one stop moves the guest's clock (QEMU's virtual
  clock follows real time while stopped); the replay measures by how much.
- Plugin backend (`PatchAtMarkUnderPlugin`): GDB connects only to apply the
  patch; the plugin gets a "mark" probe at the same address, where it
  snapshots every count and tags the paths opened after it.
- A QEMU already running (`PatchNow`): the patch goes in at once, when no
  CPU is inside a replaced function, and comes out before detaching unless
  the user keeps it.
"""
import hashlib
import time
from pathlib import Path

from gdbfault.backends.hooks import RunHooks
from gdbfault.base.errors import GdbfaultError
from gdbfault.livepatch.build import JMP_LEN, prepare_live_patch
from gdbfault.livepatch.phases import (check_consistency, fill_live_patch, live_patch_checks,
                                       timing_perturbation)
from gdbfault.machine.gdbmi import GdbCommandError, mi_quote
from gdbfault.model.paths import summarise_paths, user_fault_searches
from gdbfault.model.result import Phase
from gdbfault.kernels.banner import read_guest_bytes
from gdbfault.probing.gdb_session import read_counts

__all__ = ["live_patch_hooks", "PatchAtMark", "PatchAtMarkUnderPlugin", "PatchNow", "ReplayWatch", "arm",
           "apply_now", "PLAN_FILE"]

# What faultprobe's `livepatch` commands are given: the bytes to write where (build.LivePatch.write_plan);
# kept with a live-patched run's recording under this name (a replay of it writes them again).
PLAN_FILE = "livepatch-plan.json"


def live_patch_hooks(plan):
    """The RunHooks that apply the run's --live-patch on its backend (built, or refused, now)."""
    return (PatchAtMarkUnderPlugin if plan.spec.backend == "plugin" else PatchAtMark)(plan)


def _build(plan, file=None):
    """The patch in `file` (default: the run's --live-patch) for the plan's kernel (backends/plan.py),
    before anything boots."""
    return prepare_live_patch(file or plan.spec.live_patch.file, plan.kernel, plan.system_map,
                              plan.spec.variant if plan.lab else None)


def arm(dbg, plan_path, points, qmp_socket, timing=True):
    """The in-GDB side: the patch at the mark, instruction counts at fixed points."""
    qmp = mi_quote(str(qmp_socket)) if qmp_socket else ""
    dbg.console(f"faultprobe icount-at end *{points.end:#x} {qmp}".rstrip())
    if timing and points.loop:
        dbg.console(f"faultprobe icount-at loop_start *{points.loop[0]:#x} {qmp}".rstrip())
        dbg.console(f"faultprobe icount-at loop_end *{points.loop[1]:#x} {qmp}".rstrip())
    dbg.console(f"faultprobe livepatch *{points.mark:#x} {mi_quote(str(plan_path))}")


def _points(plan):
    """The workload's mark and end, which a live patch needs (kernels.workloads.WorkloadPoints)."""
    points = plan.points
    points.require("mark", "gdbfault_mark: the patch moment")
    points.require("end", "rt_finish: where the replay's consistency is checked")
    return points


class _AtMark(RunHooks):
    """A patch that goes in at the workload's mark (`mark=N` on its command line)."""

    writes_guest = True

    def __init__(self, plan):
        self.plan = plan
        self.patch, self.at = _build(plan), plan.spec.patch_at()
        self.points = _points(plan)


class PatchAtMark(_AtMark):
    """--live-patch on the GDB backend: at the workload's mark, in the recording and its replay alike."""

    def __init__(self, plan):
        super().__init__(plan)
        self.plan_file = None
        self.watcher = None

    def _plan_file(self):
        if self.plan_file is None:
            self.plan_file = self.patch.write_plan(self.plan.temp_dir("gdbfault-run-") / PLAN_FILE,
                                                   unpatch=self.plan.spec.live_patch.unpatch_at is not None)
        return self.plan_file

    def on_debugger(self, dbg, machine, recording=False):
        spec = self.plan.spec
        qmp = machine.probe_qmp_socket if spec.icount else None
        arm(dbg, self._plan_file(), self.points, qmp, timing=not recording)
        if recording:
            return
        if spec.timeline and spec.trace and spec.icount:
            dbg.console("faultprobe timeline")
        if spec.replay and spec.icount:
            self.watcher = ReplayWatch(machine, self.plan.result)

    def on_recorded(self, counts):
        patch = counts.get("patch") or {}
        self.plan.result.record.live_patch = {"patch": counts.get("patch"),
                                              "icount_marks": counts.get("icount_marks", {})}
        if not patch.get("applied"):
            raise GdbfaultError("the live patch was not applied while recording: "
                                f"{patch.get('error') or 'the workload never reached its mark'}")

    def watch(self, machine):
        if self.watcher is not None:
            self.watcher()

    def recording_inputs(self):
        """The patch written at the workload's mark: its plan (what is written where), by its sha256."""
        plan_file = self._plan_file()
        digest = hashlib.sha256(Path(plan_file).read_bytes()).hexdigest()
        return f"live patch at iteration {self.at} (plan sha256 {digest})", [plan_file]

    def finish(self, result, counts=None, plugin_counts=None):
        """Before/after the patch, its checks, and the proof the replay ran what was recorded."""
        fill_live_patch(result, counts, self.patch, self.at, int(result.iterations),
                        self.plan.spec.live_patch.unpatch_at)
        check_consistency(result, counts)
        result.checks = live_patch_checks(result, self.patch)
        timing_perturbation(result)


class PatchAtMarkUnderPlugin(_AtMark):
    """--live-patch on the plugin backend: GDB only applies the patch; the plugin counts and marks."""

    def plugin_probes(self):
        return [(self.points.mark, "mark", "gdbfault_mark")]

    def on_debugger(self, dbg, machine, recording=False):
        plan_file = self.patch.write_plan(machine.run_dir / PLAN_FILE)
        arm(dbg, plan_file, self.points, machine.probe_qmp_socket if self.plan.spec.icount else None,
            timing=False)

    def finish(self, result, counts=None, plugin_counts=None):
        """result.live_patch from the plugin's at_mark counts and after_mark paths."""
        data, roles_by_name = plugin_counts, plugin_counts["roles"]
        iterations = int(result.iterations)
        lp = fill_live_patch(result, counts or {}, self.patch, self.at, iterations)   # the patch's own facts
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


class PatchNow(RunHooks):
    """--live-patch on a QEMU already running: in at once, out before detaching unless kept.

    The bytes each `jmp` overwrites are read before the first write and handed
    to the run (`machine.remember`), so the old entries can be put back also
    when GDB is gone
    (backends/running_qemu.py, machine/rescue.py). `--keep-patch` keeps the
    patch only when the count ends in order (its duration, a signal); after
    an error it comes out like any patch."""

    def __init__(self, plan, file, keep=False):
        self.plan, self.keep = plan, keep
        self.patch = _build(plan, file)
        self.run_dir = None
        self.record = None            # the in-GDB record of the patch, read before detaching
        self.saved = []               # [(old entry, its first bytes before the jmp)]
        self.kept = False
        self.restored = None          # put back without GDB: True, or False when that failed
        self.applied = False          # apply_now() went through

    def on_debugger(self, dbg, machine, recording=False):
        self.run_dir = machine.run_dir
        old = []
        for f in self.patch.functions:
            now = read_guest_bytes(dbg, f.old, JMP_LEN)
            if len(now) != JMP_LEN:
                raise GdbfaultError(f"the live patch was not applied: the entry of {f.name} ({f.old:#x}) "
                                    f"cannot be read from guest memory")
            old.append((f.old, now))
        # Only the entries go back, never the replacement code: a CPU stopped inside it (or in a
        # function it called) must be able to finish there — putting the code area back under it
        # oopsed the guest. Once the entries are back the code is unreachable.
        self.saved = old
        machine.remember(self.saved, [(f.name, f.old) for f in self.patch.functions])
        apply_now(dbg, self.patch, machine.run_dir)
        self.applied = True

    def before_detach(self, dbg, failed=False):
        self.kept = bool(self.keep) and not failed
        if not self.kept:
            dbg.console("faultprobe unpatch")         # the entries: the bytes the jmps overwrote
        self.record = read_counts(dbg, self.run_dir).get("patch")

    def guest_restored(self, ok):
        self.restored = ok

    def finish(self, result, counts=None, plugin_counts=None):
        record = self.record or (counts or {}).get("patch") or ({"applied": True} if self.applied else None)
        lp = fill_live_patch(result, dict(counts or {}, patch=record), self.patch, None, None)
        if self.restored and lp.applied:
            lp.unpatched = True
        lp.kept = self.kept


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


def apply_now(dbg, patch, work, tries=50):
    """Attach mode: patch the stopped guest as soon as no CPU is inside a replaced
    function (checked in GDB: pc and the kernel stack's return addresses); while
    one is, let the guest run a moment and look again."""
    plan = patch.write_plan(Path(work) / PLAN_FILE)
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
