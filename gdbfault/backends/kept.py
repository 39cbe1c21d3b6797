"""A run's recording after the run: found again (record once, count many), and kept (for `gdbfault inspect`).

The GDB backend records the guest once and counts in a replay. That
recording is worth keeping:
- `find_recording(plan, hooks)`: before booting, look for a recording of the
  very same guest (recordings/digest.py): the one kept beside the run's
  --output from an earlier run, then the recordings cache. Found and intact,
  its log and snapshot store are put into this run's guest folder and the run
  replays it instead of booting (an old kernel's replay starts at its
  workload's entry, from the recording's snapshot). A damaged cache entry is
  removed, and the run records afresh.
- `keep_recording(...)`: after a complete run, write the manifest, cache the
  recording (unless --no-recording) and keep it beside --output with the
  run's fault index (and the System.map, the workload's ELF and whatever a
  feature's writes need, for inspect), and say so in `result.recording`.

A run whose feature writes guest memory through GDB (a live patch) records
afresh every time and is never cached: its recording carries that run's
writes, and the feature checks its replay against that recording's own
counts. It is kept beside --output like any other (inspect replays the writes).
"""
import shutil
from pathlib import Path

from gdbfault.backends.recording import ENTRY_SNAPSHOT, Recording, starts_at_entry
from gdbfault.base.errors import GdbfaultError
from gdbfault.machine.config import RECORD_LOG, RECORDING_ARGS, STATE_STORE
from gdbfault.model.result import Record
from gdbfault.model.result import Recording as RecordingInfo
from gdbfault.recordings.cache import recording_cache
from gdbfault.recordings.digest import digest_of, guest_inputs
from gdbfault.recordings.faults import INDEX_FILE, FaultIndex
from gdbfault.recordings.store import (PACKED_LOG, SCHEMA, RecordingProblem, file_entry, install, keep, pack_log,
                                       read_manifest, store_snapshots)

__all__ = ["find_recording", "keep_recording", "guest_description", "KEYFRAME_INTERVAL", "KEYFRAMES_AT_MOST",
           "KEYFRAME_PREFIX", "SYSTEM_MAP", "WORKLOAD_ELF"]

# The counting replay saves a VM snapshot at a workload fault's entry every this many guest
# instructions (at most KEYFRAMES_AT_MOST of them; faultprobe.py spreads them over longer runs):
# a replay runs ~27 M instructions/s here, so inspect reaches any fault in well under a second
# from the nearest one. Each costs one `savevm` (~0.03 s) and about the guest's used RAM on disk.
KEYFRAME_INTERVAL, KEYFRAMES_AT_MOST = 20_000_000, 16
KEYFRAME_PREFIX = "gdbfault-kf-"            # their names: gdbfault-kf-ICOUNT (gdbscripts/faultprobe.py)
# Beside a kept recording, for inspect's names: the kernel's System.map (a kernel without ELF
# symbols), the workload's ELF when the guest reads it from a root image (the lab kernel's
# module is the guest's own init.elf).
SYSTEM_MAP, WORKLOAD_ELF = "System.map", "workload.elf"


def _attendant(plan, hooks):
    """What stopped the recording on its way (the digest's `attendant`)."""
    what, _ = hooks.recording_inputs()
    if what is not None:
        return what
    return "entry snapshot" if starts_at_entry(plan) else None


def guest_description(plan, hooks):
    """The guest this run records (recordings/digest.py), from its guest folder before it is recorded."""
    leave_out = {RECORD_LOG, PACKED_LOG, STATE_STORE, plan.config.store}
    inputs = guest_inputs(plan.config, plan.guest_dir, leave_out, _attendant(plan, hooks))
    inputs["recording"] = RECORDING_ARGS       # how gdbfault records (another version may differ)
    return inputs


def _candidates(plan, digest):
    """(where, folder, manifest) of recordings of this guest: the kept one, then the cached one."""
    kept = plan.spec.keep_recording
    if kept and Path(kept).is_dir():
        try:
            manifest = read_manifest(kept)
            if manifest.get("digest") == digest:
                yield "kept", Path(kept), manifest
        except RecordingProblem:
            pass                             # replaced by this run's own when it ends
    cache = recording_cache()
    if cache is not None:
        found = cache.find(digest)
        if found is None and cache.removed:
            plan.result.recording = RecordingInfo(digest=digest, note=f"a damaged cache entry was removed "
                                                                      f"and the guest recorded afresh: "
                                                                      f"{cache.removed}")
        if found is not None:
            yield "cache", found[0], found[1]


def find_recording(plan, hooks):
    """(Recording, whether its replay starts at the workload's entry) of a recording made before of
    this very guest, installed in the run's guest folder; None when the run must record."""
    spec = plan.spec
    if spec.fresh_recording or hooks.writes_guest:
        return None
    digest = digest_of(guest_description(plan, hooks))
    if hooks.plugins():
        # a TCG plugin a feature asked for (the kernel profile) runs in the recording, unobserved:
        # a replay of an earlier recording would not carry it
        plan.result.recording = RecordingInfo(digest=digest, note="recorded afresh: the kernel profile "
                                              "this run carries runs in its recording")
        return None
    for where, folder, manifest in _candidates(plan, digest):
        try:
            install(folder, manifest, plan.guest_dir)
        except (RecordingProblem, OSError) as exc:
            if where == "cache":             # (evicted or damaged while read)
                shutil.rmtree(folder, ignore_errors=True)
            plan.result.recording = RecordingInfo(digest=digest, note=f"the {where} recording could not be "
                                                                      f"used ({exc}); recorded afresh")
            continue
        rec = manifest["record"]
        plan.result.record = Record(exit_status=rec["exit_status"], exit=rec["exit"], wall_s=rec["wall_s"],
                                    made=manifest["made"], reused=where)
        recording = Recording(plan.guest_dir / RECORD_LOG, rec["exit_status"], rec["serial"],
                              entry_checked=False, snapshot=rec["entry_snapshot"],
                              ended_after_result=rec["ended_after_result"],
                              store=(manifest.get("store") or {}).get("name"),
                              start_snapshot=manifest["start"]["snapshot"], made=manifest["made"], reused=where)
        recording.keyframes = any(s["name"].startswith(KEYFRAME_PREFIX)
                                  for s in (manifest.get("store") or {}).get("snapshots", []))
        return recording, recording.snapshot
    return None


def _manifest(plan, hooks, recording):
    """The recording's manifest (recordings/store.py), once its counting replay is over."""
    inputs = guest_description(plan, hooks)
    store = plan.guest_dir / recording.store
    snapshots = store_snapshots(store)
    start = ENTRY_SNAPSHOT if recording.snapshot else recording.start_snapshot
    record = plan.result.record
    return {"schema": SCHEMA, "digest": digest_of(inputs), "made": recording.made, "guest": inputs,
            "log": pack_log(plan.guest_dir),
            "store": {**file_entry(store), "snapshots": snapshots},
            "start": {"snapshot": start, "icount": next((s["icount"] for s in snapshots if s["name"] == start), 0)},
            "record": {"wall_s": record.wall_s, "exit_status": recording.status, "exit": record.exit,
                       "ended_after_result": recording.ended_after_result,
                       "entry_snapshot": bool(recording.snapshot), "serial": recording.serial}}


def keep_recording(plan, hooks, recording, index_file=None):
    """After a complete run: cache the recording and keep it beside --output (see the module
    docstring); result.recording says where and what. Never fails the run: a problem is a note."""
    spec, result = plan.spec, plan.result
    info = result.recording or RecordingInfo()
    result.recording = info
    if recording.store is None:
        info.note = "no recording kept: qemu-img is missing, so the recording has no snapshot to reopen it at " \
                    "(apt-get install qemu-utils)"
        return
    try:
        manifest = _manifest(plan, hooks, recording)
        info.digest, info.made = manifest["digest"], manifest["made"]
        info.start = manifest["start"]
        info.keyframes = sum(s["name"].startswith(KEYFRAME_PREFIX) for s in manifest["store"]["snapshots"])
        if recording.reused:
            info.replayed = recording.reused
        if not spec.recording:
            info.note = "none kept (--no-recording)"
            return
        cache = recording_cache() if not hooks.writes_guest else None
        if cache is not None:
            entry = cache.put(plan.guest_dir, manifest)
            info.cache = str(entry) if entry is not None else None
        if spec.keep_recording:
            _keep_beside_output(plan, hooks, manifest, info, index_file)
    except (GdbfaultError, OSError) as exc:
        info.note = f"the recording was not kept: {exc}"


def _keep_beside_output(plan, hooks, manifest, info, index_file):
    """The kept folder: the recording, the guest's files, the fault index and what inspect reads."""
    result = plan.result
    extra = []
    if index_file is not None and Path(index_file).is_file():
        extra.append((index_file, INDEX_FILE))
    if plan.system_map is not None:
        extra.append((plan.system_map, SYSTEM_MAP))
    if plan.workload is not None and plan.boot is not None:
        extra.append((plan.workload, WORKLOAD_ELF))
    extra += [(path, Path(path).name) for path in hooks.recording_inputs()[1]]
    target = Path(plan.spec.keep_recording)
    info.size_bytes = keep(plan.guest_dir, manifest, target, extra=extra)
    info.dir = target.name
    if index_file is not None and Path(index_file).is_file():
        index = FaultIndex.load(target / INDEX_FILE, result.iterations)
        info.index, info.faults, info.sample = INDEX_FILE, len(index), index.sample
        info.shapes = index.summary()
