"""Replays of a kept recording, run to one exact guest instruction.

`KeptRecording(run_file, result)` finds a run's recording (its `recording.dir`,
beside the run file; or `folder=` a kept folder) and checks, before anything starts, that it can be
replayed: its manifest's digest, QEMU (version, executable, firmware) and
every guest file as they were when it was made, its replay log and snapshot
store intact. Anything else is one line (exit 2): a replay with other inputs
would stand still, silently.

`Scratch(kept)` is a private folder where its replays run: the guest's files
linked there under their own names (QEMU runs in it: the names are guest
input), the log unpacked, and a copy of the snapshot store, which replays
write (savevm) — the kept recording itself is never written. `scratch.start()`
starts a replay halted at a snapshot (the nearest one before the instruction
wanted: the recording's first instruction, an old kernel's workload entry, a
keyframe the counting replay saved, or one saved here), with QMP, and
optionally GDB's socket or TCG plugins. `run_to(icount)` then lets it run to
that exact instruction with QMP `replay-break` — no breakpoint stops on the way
— and `save(name)` saves a snapshot there. A replay whose instruction count
stops moving while it is said to run (the mark of a recording replayed with
other inputs, or of a QEMU deadlock) is stopped and said so.
"""
import shutil
import time
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.lifecycle import check_stop, shielded
from gdbfault.machine.config import config_from_fields, plugin_config, replay_config
from gdbfault.machine.qemu import Machine, describe_exit, private_dir
from gdbfault.recordings.digest import describe_difference, qemu_identity
from gdbfault.recordings.store import RecordingProblem, read_manifest, unpack_log, verify

__all__ = ["KeptRecording", "Scratch", "Replay", "STALL_S"]

# A replay said to run whose instruction count has not moved for this long stands still.
STALL_S = 5.0


class KeptRecording:
    """A run's kept recording, checked to be replayable (see the module docstring)."""

    def __init__(self, run_file, result, folder=None):
        rec = result.recording
        if result.mode.backend != "gdb":
            raise GdbfaultError(f"{run_file} has no recording: the {result.mode.backend} backend runs the guest "
                                "once, unrecorded, and gdbfault inspect opens recordings",
                                "run it with the GDB backend (the default) and --output")
        if rec is None or not rec.dir:
            why = f" ({rec.note})" if rec is not None and rec.note else ""
            raise GdbfaultError(f"{run_file} has no kept recording{why}",
                                "run it again with --output (and without --no-recording)")
        if folder is not None:
            self.folder = Path(folder).resolve()
        else:
            self.folder = Path(rec.dir) if Path(rec.dir).is_absolute() else Path(run_file).resolve().parent / rec.dir
        if not self.folder.is_dir():
            raise GdbfaultError(f"the recording of {run_file} is gone: {self.folder} does not exist")
        try:
            self.manifest = read_manifest(self.folder)
            if self.manifest["digest"] != rec.digest:
                raise RecordingProblem(f"{self.folder} holds another recording than the run's")
            now = {**self.manifest["guest"], "qemu": qemu_identity(self.manifest["guest"]["machine"]["qemu"])}
            why = describe_difference(self.manifest["guest"], now)
            if why is not None:
                raise RecordingProblem(why)
            verify(self.folder, self.manifest, inputs=True)
        except RecordingProblem as exc:
            raise GdbfaultError(f"cannot replay the recording in {self.folder}: {exc}") from None
        self.result = result
        self.snapshots = list(self.manifest["store"]["snapshots"])

    @property
    def fields(self):
        return self.manifest["guest"]["machine"]

    def nearest_snapshot(self, icount, extra=()):
        """The snapshot at or before `icount` closest to it: {name, icount}."""
        best = None
        for snap in list(self.snapshots) + list(extra):
            if 0 <= snap["icount"] <= icount and (best is None or snap["icount"] >= best["icount"]):
                best = snap
        if best is None:
            raise GdbfaultError(f"the recording has no snapshot before guest instruction {icount:,}")
        return best


class Scratch:
    """A private folder for a kept recording's replays (module docstring); removed by close()."""

    def __init__(self, kept):
        self.kept = kept
        self.folder = private_dir("gdbfault-inspect-")
        self.saved = []                # snapshots saved here: {name, icount}
        try:
            for name in kept.manifest["guest"]["files"]:
                (self.folder / name).symlink_to(kept.folder / name)
            unpack_log(kept.folder, kept.manifest, self.folder)
            store = kept.manifest["store"]["name"]
            shutil.copyfile(kept.folder / store, self.folder / store)
        except BaseException:
            self.close()
            raise

    def start(self, at, gdb=False, plugins=(), timeout=60.0):
        """A Replay halted at snapshot `at` ({name, icount}), QMP connected; with `gdb`, its gdbstub
        listens (Replay.machine.gdb_socket); `plugins`: -plugin arguments."""
        for stale in ("gdb.sock", "qmp-probes.sock", "serial.log"):
            (self.folder / stale).unlink(missing_ok=True)
        config = replay_config(config_from_fields(self.kept.fields, self.folder), snapshot=at["name"])
        if plugins:
            config = plugin_config(config, plugins, halted=True)
        machine = Machine(config, run_dir=self.folder, own_dir=False)
        replay = Replay(machine, at["icount"])
        try:
            machine.start(timeout=timeout)
            machine.wait_ready(timeout)
            replay.connect()
        except BaseException:
            replay.close()
            raise
        return replay

    def close(self):
        with shielded():
            shutil.rmtree(self.folder, ignore_errors=True)


class Replay:
    """One QEMU replaying the recording, driven over QMP."""

    def __init__(self, machine, icount):
        self.machine, self.start_icount = machine, icount
        self.qmp = None

    def connect(self):
        from qemu.qmp.legacy import QEMUMonitorProtocol
        self.qmp = QEMUMonitorProtocol(str(self.machine.probe_qmp_socket))
        self.qmp.connect()
        at = self.icount()
        if at != self.start_icount:
            raise GdbfaultError(f"the replay started at guest instruction {at:,}, not at its snapshot's "
                                f"{self.start_icount:,}")

    def icount(self):
        return int(self.qmp.cmd("query-replay")["icount"])

    def hmp(self, line):
        return self.qmp.cmd("human-monitor-command", **{"command-line": line})

    def run_to(self, icount, resume=True, deadline=None):
        """Run to guest instruction `icount` exactly (QMP replay-break). `resume`: True, QMP cont;
        a function, what resumes the guest instead (GDB's continue, when GDB is attached)."""
        now = self.icount()
        if now == icount:               # (a snapshot taken right there: QEMU would not stop again)
            return now
        if now > icount:
            raise GdbfaultError(f"the replay is past guest instruction {icount:,} already (at {now:,})")
        self.qmp.cmd("replay-break", icount=icount)
        if callable(resume):
            resume()
        elif resume:
            self.qmp.cmd("cont")
        last, since = None, time.monotonic()
        while True:
            check_stop()
            if self.machine.poll() is not None:
                raise GdbfaultError(f"the replay ended before guest instruction {icount:,} "
                                    f"({describe_exit(self.machine.poll())}): the recording is shorter?")
            status = self.qmp.cmd("query-status")["status"]
            now = self.icount()
            if status not in ("running", "debug") and now >= icount or status in ("shutdown", "guest-panicked"):
                break
            if now != last:
                last, since = now, time.monotonic()
            elif status == "running" and time.monotonic() - since > STALL_S:
                raise GdbfaultError(f"the replay stands still at guest instruction {now:,} (QEMU says it runs; "
                                    "its inputs differ from the recording's?)")
            if deadline is not None and time.monotonic() > deadline:
                raise GdbfaultError(f"the replay did not reach guest instruction {icount:,} in time "
                                    f"(at {now:,})")
            time.sleep(0.01)
        if now != icount:
            raise GdbfaultError(f"the replay stopped at guest instruction {now:,}, not {icount:,}")
        return now

    def save(self, name):
        """savevm `name` here; its {name, icount}."""
        said = self.hmp(f"savevm {name}").strip()
        if said:
            raise GdbfaultError(f"QEMU could not save a snapshot at guest instruction {self.icount():,}: {said}")
        return {"name": name, "icount": self.icount()}

    def quit(self, timeout=30.0):
        """Ask QEMU to quit (plugins write their results as it exits); its exit status."""
        try:
            self.qmp.cmd("quit")
        except Exception:               # it may be gone before it answers
            pass
        return self.machine.wait(timeout)

    def close(self):
        with shielded():
            if self.qmp is not None:
                try:
                    self.qmp.close()
                except Exception:
                    pass
            self.machine.close()
