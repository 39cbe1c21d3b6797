"""The RunResult: what one measured run found, as typed parts (schema "gdbfault.run/1").

Every backend (GDB breakpoints, the TCG plugin, attach-to-running) fills the
same RunResult; report, compare and check read its typed fields, and its JSON
(`to_dict`, read back by `RunResult.from_dict`) is the saved run file. The JSON
keys are stable: tests and users read them.

  schema    "gdbfault.run/1"
  tool      Tool       {gdbfault, qemu, gdb, emulator*}: versions (gdb None on the plugin backend);
                        emulator: the QEMU binary's name (qemu-system-i386 when absent)
  kernel    Kernel     {path, lab, variant, symbols, profile, model, boot, arch*, profile_reason*,
                        profile_notes*, banner*, banner_form*, identity*}: arch "i386" or "x86_64"
  workload  Workload   {name, own, iterations (requested), command_line, abi*, ia32_emulation*,
                        attached_to*, qemu_pid*}: abi "i386" (int $0x80) or "x86_64" (syscall)
  mode      Mode       {backend, accel, icount, trace, cost_sample, cpu*, icount_shift*, replay*}
  probes    [Probe     {role, symbol, address, hits: Hits{boot, workload}, total, duplicates,
                        alternatives*, per_iteration*}]
  guest     the workload's own GDBFAULT-RESULT object (a plain dict: the workload decides its
            keys), or None
  checks    [Check     {role, symbol, expected, counted, ok, phase*}]: probe hits against the
                        guest's truth (phase: before/after/after_unpatch/total of a live patch)
  run       RunStatus  {complete, error, exit_status, exit, wall_s, hits, hits_per_s, phase*,
                        duplicate_filter* (False when counted in a replay, where none is needed),
                        duplicates*, insns_total* (plugin), counts_at_s*, guest* (attached), kept*}
  record*   Record     {exit_status, exit, wall_s, live_patch*, guest*, made*, reused*}: the recording
                        run (made: when; reused: "cache" or "kept" when this run replayed a recording
                        made before instead of booting: wall_s is then that recording's)
  recording*  Recording {dir*, size_bytes*, digest, made, replayed*, cache*, index*, faults*, sample*,
                        start*, keyframes*, shapes*, outliers*, note*}: the run's recording, kept in dir
                        (relative to the run file) for `gdbfault inspect`: shapes {shape: {count,
                        median, min/max: {fault, iteration, icount, cost}}}, outliers [{shape, fault,
                        iteration, cost, median, extra: [{symbol, instructions}], path, text}]
  paths*    [PathRow   {shape, events, count, costed, min, median, p95, max, cost_hist}]
  user_fault_searches*  traced faults that searched the exception table and raised a signal
  trace*    Trace      {entries, lost, sample, costed, return_sites*, open_at_exit*,
                        inexact_paths*, iteration: CostStats{min, median, p95, max}}
  live_patch*  LivePatch {at_iteration, source, kind, functions, code, applied, error, icount,
                        stop_s, icount_marks, unpatched, unpatch_at_iteration*, unpatch_icount*,
                        timeline*, before*/after*/after_unpatch*: Phase{iterations, hits,
                        per_iteration, paths*, user_fault_searches*, checks*}, consistency*,
                        timing*, kept*}
  verify*   CrossCheck {backend, agree, differences, gdb_duplicates_filtered, gdb_wall_s, inexact_costs*}
  kernel_profile*  the kernel profile the run carried (RunSpec.kernel_profile): kprofile/result.py's
            dict, schema "gdbfault.profile/1", as `gdbfault profile` gives it

A starred key is written only once something set it (a field assigned None is
written as null); a file read back is written back with exactly its keys, and
keys this version does not know are kept.
"""
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from gdbfault.base.errors import GdbfaultError

__all__ = ["json_default", "SCHEMA", "RunResult", "Tool", "Kernel", "Workload", "Mode", "Hits", "Probe", "Check",
           "PathRow", "CostStats", "Trace", "RunStatus", "Record", "Recording", "Phase", "LivePatch", "CrossCheck",
           "as_result", "REQUIRED_KEYS"]

SCHEMA = "gdbfault.run/1"
# What a run file must hold to be read at all (the rest has defaults).
REQUIRED_KEYS = {"tool": dict, "kernel": dict, "workload": dict, "mode": dict, "probes": list, "run": dict}


def _part(cls, optional=False):
    """A field holding one part (a dict in the JSON): optional ones start unset (None),
    the others as an empty part."""
    if optional:
        return field(default=None, metadata={"part": cls, "optional": True})
    return field(default_factory=cls, metadata={"part": cls})


def _parts(cls, optional=False):
    """A field holding a list of parts."""
    return field(default=None if optional else dataclasses.MISSING,
                 default_factory=dataclasses.MISSING if optional else list,
                 metadata={"part": cls, "many": True, "optional": optional})


def _optional(default=None, **kw):
    """A field written only once set (see the module docstring)."""
    return field(default=default, metadata={"optional": True, **kw})


class _Part:
    """A dataclass that reads and writes its JSON dict, key for key.

    Field metadata: "part" (a _Part class: the value is one, or a list of them
    with "many"), "optional" (the key is written only once set), "json" False
    (never written: bookkeeping during a run).
    """

    __slots__ = ()

    @classmethod
    def _field_names(cls):
        return [f.name for f in fields(cls)]

    def __post_init__(self):
        absent = {f.name for f in fields(self)
                  if f.metadata.get("optional") and getattr(self, f.name) is None}
        object.__setattr__(self, "_absent_keys", absent)

    def __setattr__(self, name, value):
        f = self.__dataclass_fields__.get(name)
        if f is not None:
            value = _convert(f, value)
            absent = self.__dict__.get("_absent_keys")
            if absent is not None:
                absent.discard(name)
        object.__setattr__(self, name, value)

    def _absent(self):
        return self.__dict__.setdefault("_absent_keys", set())

    def _extras(self):
        return self.__dict__.setdefault("_extra_keys", {})

    def _get(self, key):
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        return self._extras()[key]

    def __contains__(self, key):
        if key in self.__dataclass_fields__:
            f = self.__dataclass_fields__[key]
            return f.metadata.get("json", True) and key not in self._absent()
        return key in self._extras()

    def has(self, name):
        """Whether field `name` is set (and written to the JSON)."""
        return name in self

    def to_dict(self):
        """The JSON dict (plain dicts and lists all the way down)."""
        out = {}
        absent = self._absent()
        for f in fields(self):
            if f.name in absent or not f.metadata.get("json", True):
                continue
            out[f.name] = _plain(getattr(self, f.name))
        for k, v in self._extras().items():
            out[k] = _plain(v)
        order = self.__dict__.get("_key_order")
        if order:                        # a file read back keeps its own key order
            out = {**{k: out[k] for k in order if k in out}, **out}
        return out

    @classmethod
    def from_dict(cls, d, where="run"):
        """The part for JSON dict `d`; a one-line GdbfaultError naming `where` (the file) if it is not one."""
        return cls._read(d, where, cls.__name__.lower())

    @classmethod
    def _read(cls, d, where, at):
        """from_dict for the part at `at` (e.g. "probes[2]") of the run `where`."""
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise GdbfaultError(f"{where} is not a complete gdbfault run: {at} is not an object "
                                f"but {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        kwargs, missing = {}, []
        for name, f in known.items():
            if name in d:
                kwargs[name] = _convert(f, d[name], where, f"{at}.{name}" if at else name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(name)
        if missing:
            raise GdbfaultError(f"{where} is not a complete gdbfault run: {at} has no "
                                f"{', '.join(repr(m) for m in missing)}")
        part = cls(**kwargs)
        object.__setattr__(part, "_absent_keys", {n for n in known if n not in d})
        object.__setattr__(part, "_key_order", list(d))
        extra = {k: v for k, v in d.items() if k not in known}
        if extra:
            object.__setattr__(part, "_extra_keys", extra)
        return part

    def __eq__(self, other):
        if isinstance(other, _Part):
            return type(other) is type(self) and self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None


def _convert(f, value, where="the result", at=None):
    """A JSON value into the field's type (parts from dicts); other values as they are."""
    cls = f.metadata.get("part")
    if cls is None or value is None:
        return value
    at = at or f.name
    if f.metadata.get("many"):
        if not isinstance(value, list):
            raise GdbfaultError(f"{where} is not a complete gdbfault run: {at} is not a list")
        return [cls._read(v, where, f"{at}[{i}]") for i, v in enumerate(value)]
    return cls._read(value, where, at)


def _plain(v):
    if isinstance(v, _Part):
        return v.to_dict()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


# -- the parts -----------------------------------------------------------------------

@dataclass(eq=False)
class Tool(_Part):
    gdbfault: str = None
    qemu: str = None
    gdb: str = None               # None on the plugin backend (GDB not used)
    emulator: str = _optional()   # the QEMU binary's name: qemu-system-i386 or qemu-system-x86_64

    def emulator_name(self):
        """The QEMU binary's name (runs saved before it was noted all ran qemu-system-i386)."""
        return self.emulator or "qemu-system-i386"


@dataclass(eq=False)
class Kernel(_Part):
    path: str
    lab: bool = False
    variant: str = None           # the lab kernel's build; None for a kernel brought by the user
    symbols: str = None           # "KIND (SOURCE)"
    profile: str = None           # the probe profile's name
    model: str = None             # which ground-truth rules apply (truth.expected_hits)
    boot: dict = None             # how a brought kernel was booted (kernels.boot.BootSetup.describe)
    arch: str = _optional()       # "i386" or "x86_64" (kernels/arch.py)
    profile_reason: str = _optional()
    profile_notes: list = _optional()
    banner: str = _optional()
    banner_form: str = _optional()
    identity: dict = _optional()        # how the kernel was checked: {map: ..., running: ...} (kernels/identity.py)

    def label(self):
        """How reports name this kernel: "lab kernel (VARIANT)" or the file's name."""
        return f"lab kernel ({self.variant})" if self.lab else Path(self.path).name


@dataclass(eq=False)
class Workload(_Part):
    name: str = None              # None when attached to a QEMU gdbfault did not start
    own: bool = False             # the user's own program (its counts are not checked)
    iterations: int = None        # as requested (RunResult.iterations is the one to divide by)
    command_line: str = ""
    abi: str = _optional()            # the workload's system-call ABI: "i386" or "x86_64"
    ia32_emulation: bool = _optional()   # an i386 workload on an x86_64 kernel (its IA32 emulation)
    attached_to: str = _optional()
    qemu_pid: int = _optional()


@dataclass(eq=False)
class Mode(_Part):
    backend: str = "gdb"
    accel: str = "tcg"
    icount: bool = True
    trace: bool = True
    cost_sample: int = 1
    cpu: str = _optional()               # the -cpu model QEMU ran (machine/qemu.CPU_MODELS)
    icount_shift: int = _optional()
    replay: bool = _optional()
    replay_start: str = _optional()      # "power-on", or "workload entry (snapshot)" (old kernels)
    snapshot_error: str = _optional()    # why a snapshot replay fell back to power-on


@dataclass(eq=False)
class Hits(_Part):
    boot: int = 0
    workload: int = 0


@dataclass(eq=False)
class Probe(_Part):
    role: str
    symbol: str
    address: int
    hits: Hits = _part(Hits)
    total: int = 0
    duplicates: int = 0
    alternatives: list = _optional()
    per_iteration: float = _optional()


@dataclass(eq=False)
class Check(_Part):
    role: str
    symbol: str
    expected: int
    counted: int
    ok: bool
    phase: str = _optional()      # a live patch's phase, or "total"; absent on a plain run


@dataclass(eq=False)
class PathRow(_Part):
    shape: str
    events: list = field(default_factory=list)
    count: int = 0
    costed: int = 0
    min: int = None
    median: float = None
    p95: int = None
    max: int = None
    cost_hist: dict = field(default_factory=dict)   # {"cost": count}


@dataclass(eq=False)
class CostStats(_Part):
    min: int = None
    median: float = None
    p95: int = None
    max: int = None


@dataclass(eq=False)
class Trace(_Part):
    entries: int = 0
    lost: int = 0
    sample: int = 1
    costed: bool = False
    return_sites: list = _optional()        # GDB backend
    open_at_exit: int = _optional()         # plugin backend
    inexact_paths: int = _optional()        # plugin backend
    iteration: CostStats = _part(CostStats)


@dataclass(eq=False)
class RunStatus(_Part):
    complete: bool = False
    error: str = None
    exit_status: int = None
    exit: str = None
    wall_s: float = None
    hits: int = 0
    hits_per_s: float = None
    phase: str = _optional()                # record / replay / live (GDB backend)
    duplicate_filter: bool = _optional()
    duplicates: int = _optional()
    insns_total: int = _optional()          # plugin backend
    counts_at_s: float = _optional()        # attached: the last snapshot's time into the window (None: none read)
    guest: str = _optional()                # attached: what became of the user's guest when gdbfault left it
    kept: list = _optional()                # --keep-run-dir: the run's folders, kept
    # Bookkeeping during a run, never written: gdbfault had to stop QEMU itself.
    stopped_by_gdbfault: bool = field(default=False, metadata={"json": False})


@dataclass(eq=False)
class Record(_Part):
    """The recording run (record/replay): its end, and what it printed."""
    exit_status: int = None
    exit: str = None
    wall_s: float = None
    live_patch: dict = _optional()          # {patch, icount_marks} of the recording's patch stop
    guest: dict = _optional()               # the recording's GDBFAULT-RESULT
    made: str = _optional()                 # when ("YYYY-MM-DD HH:MM:SS UTC")
    reused: str = _optional()               # "cache" / "kept": replayed, not made by this run


@dataclass(eq=False)
class Recording(_Part):
    """The run's recording: where it is kept, what it holds, what it says about the outliers."""
    digest: str = None
    made: str = None                        # when the guest was recorded ("YYYY-MM-DD HH:MM:SS UTC")
    dir: str = _optional()                  # the kept folder, relative to the run file's folder
    size_bytes: int = _optional()
    replayed: str = _optional()             # "cache" / "kept": this run replayed a recording made before
    cache: str = _optional()                # the cache entry holding it
    index: str = _optional()                # the fault index file in `dir`
    faults: int = _optional()               # workload faults in the index
    sample: int = _optional()
    start: dict = _optional()               # {snapshot, icount}: where replays start
    keyframes: int = _optional()            # snapshots along the workload, saved by the counting replay
    shapes: dict = _optional()
    outliers: list = _optional()
    note: str = _optional()                 # why nothing is kept, or what went wrong keeping or explaining


@dataclass(eq=False)
class Phase(_Part):
    """One phase of a live-patched run: before, after, after_unpatch."""
    iterations: int = None
    hits: dict = field(default_factory=dict)            # symbol -> workload hits
    per_iteration: dict = field(default_factory=dict)   # symbol -> hits per iteration
    paths: list = _parts(PathRow, optional=True)
    user_fault_searches: int = _optional()
    checks: list = _parts(Check, optional=True)


@dataclass(eq=False)
class LivePatch(_Part):
    at_iteration: int = None                # None: applied at once on attaching
    source: str = None
    kind: str = None
    functions: list = field(default_factory=list)       # [{name, old, new, size}]
    code: dict = field(default_factory=dict)            # {address, bytes}
    applied: bool = False
    error: str = None
    icount: int = None
    stop_s: float = None
    icount_marks: dict = field(default_factory=dict)
    unpatched: bool = False
    unpatch_at_iteration: int = _optional()
    unpatch_icount: int = _optional()
    timeline: dict = _optional()            # {start, width, hits: {role: [per window]}}
    before: Phase = _part(Phase, optional=True)
    after: Phase = _part(Phase, optional=True)
    after_unpatch: Phase = _part(Phase, optional=True)
    consistency: dict = _optional()
    timing: dict = _optional()
    kept: bool = _optional()

    PHASES = ("before", "after", "after_unpatch")

    def phases(self):
        """[(name, Phase)] of the phases this run has, in order."""
        return [(n, getattr(self, n)) for n in self.PHASES if self.has(n)]


@dataclass(eq=False)
class CrossCheck(_Part):
    """--verify-with gdb: do the plugin and the GDB backend agree?"""
    backend: str = "gdb"
    agree: bool = False
    differences: list = field(default_factory=list)
    gdb_duplicates_filtered: int = 0
    gdb_wall_s: float = None
    inexact_costs: int = _optional()    # costs above GDB's, all in paths the plugin marked inexact


@dataclass(eq=False)
class RunResult(_Part):
    tool: Tool = field(metadata={"part": Tool})
    kernel: Kernel = field(metadata={"part": Kernel})
    workload: Workload = field(metadata={"part": Workload})
    mode: Mode = field(metadata={"part": Mode})
    probes: list = _parts(Probe)
    guest: dict = None
    checks: list = _parts(Check)
    run: RunStatus = _part(RunStatus)
    record: Record = _part(Record, optional=True)
    paths: list = _parts(PathRow, optional=True)
    user_fault_searches: int = _optional()
    trace: Trace = _part(Trace, optional=True)
    live_patch: LivePatch = _part(LivePatch, optional=True)
    verify: CrossCheck = _part(CrossCheck, optional=True)
    kernel_profile: dict = _optional()
    recording: Recording = _part(Recording, optional=True)
    schema: str = SCHEMA

    def to_dict(self):
        out = super().to_dict()
        if "_key_order" in self.__dict__:
            return out
        return {"schema": out.pop("schema", SCHEMA), **out}

    @classmethod
    def from_dict(cls, d, where="run"):
        """A saved run (today's JSON files): refused in one line when it is not one."""
        if isinstance(d, RunResult):
            return d
        if not isinstance(d, Mapping) or not str(d.get("schema", "")).startswith("gdbfault.run/"):
            raise GdbfaultError(f"{where} is not a gdbfault run file (no gdbfault.run schema)")
        for key, kind in REQUIRED_KEYS.items():
            if not isinstance(d.get(key), kind):
                raise GdbfaultError(f"{where} is not a complete gdbfault run: '{key}' is "
                                    f"{'missing' if key not in d else 'not a ' + kind.__name__}")
        return cls._read(d, where, "")

    # -- what the readers need ---------------------------------------------------

    @property
    def iterations(self):
        """The iteration count per-iteration figures divide by: the guest's own count
        when it reported one, else the one requested (None when neither is known)."""
        reported = (self.guest or {}).get("iterations") if isinstance(self.guest, Mapping) else None
        return reported or self.workload.iterations

    def probe(self, role):
        """The probe with this role, or None."""
        return next((p for p in self.probes if p.role == role), None)

    def find_probe(self, name):
        """The probe with this role, else the one with this symbol, else None."""
        return self.probe(name) or next((p for p in self.probes if p.symbol == name), None)

    def path(self, shape):
        """The path row of this shape, or None."""
        return next((p for p in self.paths or [] if p.shape == shape), None)

    def whole_run_checks(self):
        """The checks of the whole run (a live-patched run also has one row per phase)."""
        return [c for c in self.checks if (c.phase or "total") == "total"]

    @property
    def checks_ok(self):
        """True when every check against the guest's truth passed (also when there are none)."""
        return all(c.ok for c in self.checks)

    @property
    def failed_checks(self):
        return [c for c in self.checks if not c.ok]

    @property
    def total_hits(self):
        return sum(p.total for p in self.probes)

    def label(self):
        """How reports name this run's kernel."""
        return self.kernel.label()


def as_result(x):
    """A RunResult from a RunResult (itself) or a run's JSON dict."""
    if isinstance(x, RunResult):
        return x
    if isinstance(x, Mapping):
        return RunResult.from_dict(x)
    raise TypeError(f"not a RunResult: {type(x).__name__}")


def json_default(value):
    """For json.dumps(default=...): RunResults inside other data (a comparison holds two) are
    written as their JSON dict."""
    if isinstance(value, RunResult):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
