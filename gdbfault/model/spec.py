"""What one run is: `RunSpec`, and the one table of its user-facing options.

`RUN_OPTIONS` declares every run option once: its key (the argparse dest and
the key of a `gdbfault check` [runs.NAME] table), the RunSpec field it sets,
its type, its check and its command-line flag and help. `RunSpec.from_mapping`
turns a mapping of those keys into a checked RunSpec; the CLI (an argparse
namespace as a mapping) and TOML check specs both go through it, so a new run
option is a RunSpec field plus one RunOption line (and the code that uses it).
`validate_spec` re-checks a RunSpec built in Python (run_qemu calls it).
"""
from dataclasses import dataclass, field
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import VARIANTS, WORKLOAD_ABIS, WORKLOADS, lab_kernel
from gdbfault.base.userfiles import input_file
from gdbfault.model.roles import parse_probe_option

__all__ = ["RunSpec", "LivePatchSpec", "RunOption", "RUN_OPTIONS", "OPTION", "validate_spec", "check_mapping",
           "MAX_ITERATIONS"]

# The workloads parse iterations=N into a u32 and refuse what could overflow
# it (qemu/workloads/driver.c): the largest N they take.
MAX_ITERATIONS = 4294967289
BACKENDS = ("gdb", "plugin")


@dataclass
class LivePatchSpec:
    """A live patch asked for on the run: its file, and when it goes in (and out)."""

    file: str
    at: int = None          # iterations done before the patch; None = half of them
    unpatch_at: int = None  # iterations done before the old entries go back; None = never


@dataclass
class RunSpec:
    """Everything that defines one run (what the CLI flags and [runs.NAME] tables become)."""

    kernel: str = "lab"                  # "lab" or a path
    variant: str = "vanilla"             # lab kernel variant
    system_map: str = None
    workload: str = "mprotect"
    workload_abi: str = None             # "i386" | "x86_64"; None: i386 for a built-in, a file's own
    iterations: int = None
    append: str = ""
    profile: str = None                  # name or file; None = pick from the symbols
    extra_probes: list = field(default_factory=list)   # [(role, symbol)]
    icount: bool = True
    timeout_s: float = 600.0
    memory_mb: int = None                # guest RAM; None: 64 MB for the lab kernel, what a brought one needs
    gdb: str = "gdb"
    qemu: str = None                     # the QEMU binary; None: the one the kernel's architecture needs
    keep_run_dir: bool = False
    trace: bool = True                   # follow fault paths (costs need icount)
    backend: str = "gdb"                 # "gdb" (breakpoints) or "plugin" (TCG plugin, no stops)
    replay: bool = True                  # record without GDB, count in the replay (icount only)
    cost_sample: int = 1                 # cost every Nth fault only
    live_patch: object = None            # LivePatchSpec: patch the kernel mid-run
    timeline: bool = False               # keep each traced path's instruction count (--plot of a live patch)
    # The kernel profile (kprofile/): `gdbfault profile` is one; with kernel_profile any run
    # carries the profile plugin beside its counting (compare --profile: counts and profile in
    # one run). call_chains: also a shadow call stack (inclusive costs, folded stacks, ~1.3x
    # instead of ~1.05x); profile_every_block: checks only, chains with a callback on every block.
    kernel_profile: bool = False
    call_chains: bool = False
    profile_every_block: bool = False
    recording: bool = True               # leave the run's recording behind (kept, cached) for inspect and reuse
    fresh_recording: bool = False        # record anew even when a kept or cached recording of this guest exists
    keep_recording: str = None           # the folder the recording is kept in (beside --output: FILE.rr)

    @classmethod
    def from_mapping(cls, mapping, where=None):
        """A checked RunSpec from {option key: value} (keys of RUN_OPTIONS).

        A missing key or a None value takes the option's default. `where` says
        how a problem names its key: None for the command line (`--iterations
        must be ...`), else a function key -> prefix, e.g. "spec.toml:3:
        [runs.a] key 'iterations':". Unknown keys, wrong types and bad values
        raise GdbfaultError with one line naming the key.
        """
        check_mapping(mapping, where)
        given = {k: v for k, v in mapping.items() if v is not None}
        values = {}
        for opt in RUN_OPTIONS:
            if opt.field is None or opt.key not in given:
                continue
            value = given[opt.key]
            if opt.convert is not None:
                try:
                    value = opt.convert(value)
                except GdbfaultError as exc:
                    raise GdbfaultError(_problem(where, opt.key, str(exc), sentence=True)) from None
            values[opt.field] = value
        for key in ("patch_at", "unpatch_at"):
            if key in given and "live_patch" not in given:
                raise GdbfaultError(_problem(where, key, f"goes with {_name(where, 'live_patch')}"))
        if "live_patch" in given:
            values["live_patch"] = LivePatchSpec(given["live_patch"], given.get("patch_at"),
                                                 given.get("unpatch_at"))
        spec = cls(**values)
        key, text = next(_problems(spec), (None, None))
        if key is not None:
            raise GdbfaultError(_problem(where, key, text))
        return spec

    def kernel_files(self):
        if self.kernel == "lab":
            return lab_kernel(self.variant)
        kernel = input_file(self.kernel, "image", "kernel file")
        if self.system_map:
            input_file(self.system_map, "system_map")
        return kernel, Path(self.system_map) if self.system_map else None

    def kernel_model(self, profile_name):
        """Which ground-truth rules apply (truth.expected_hits): the lab
        variant's own, else those of the kernel's probe profile."""
        return f"lab-{self.variant}" if self.kernel == "lab" else profile_name

    def patch_at(self):
        """The iteration a live patch goes in at: --patch-at, by default half of --iterations
        (None without a live patch or without --iterations)."""
        if self.live_patch is None or self.iterations is None:
            return None
        return self.live_patch.at if self.live_patch.at is not None else self.iterations // 2

    def command_line(self):
        words = []
        if self.iterations is not None:
            words.append(f"iterations={int(self.iterations)}")
        if self.patch_at() is not None:
            words.append(f"mark={int(self.patch_at())}")     # the workload calls gdbfault_mark() there
            if self.live_patch.unpatch_at is not None:
                words.append(f"mark2={int(self.live_patch.unpatch_at)}")
        if self.append:
            words.append(self.append)
        return " ".join(words)


@dataclass(frozen=True)
class RunOption:
    """One user-facing run option: how it is named, typed, checked and offered."""

    key: str                 # argparse dest and [runs.NAME] key
    field: str = None        # the RunSpec field it sets (None: from_mapping reads it itself)
    kind: type = str         # str, int, float (an int is taken), bool, list (of strings)
    flag: str = None         # the command-line flag; None = not on the command line
    cli: dict = None         # argparse keywords besides the flag and dest (help, metavar, action, ...)
    convert: object = None   # value -> RunSpec field value; may raise GdbfaultError


def _parse_probes(texts):
    return [parse_probe_option(t) for t in texts]


# In the order the command line's --help lists them.
RUN_OPTIONS = (
    RunOption("kernel", "kernel", str, "--kernel", dict(
        default="lab", metavar="lab|PATH",
        help="kernel to boot: the built-in lab kernel (default) or a kernel image")),
    RunOption("variant", "variant", str, "--variant", dict(
        default="vanilla", choices=VARIANTS, help="lab kernel build (default: vanilla, the 1997 order)")),
    RunOption("system_map", "system_map", str, "--system-map", dict(
        metavar="FILE", help="System.map for a kernel without ELF symbols")),
    RunOption("workload", "workload", str, "--workload", dict(
        default="mprotect", metavar="NAME|FILE",
        help=f"guest workload: {', '.join(WORKLOADS)} (default: mprotect), or your own "
             "static i386 ELF file, run as init")),
    RunOption("workload_abi", "workload_abi", str, "--workload-abi", dict(
        choices=WORKLOAD_ABIS, help="the built-in workload's system-call ABI: i386 (int $0x80, the default; on an "
                                    "x86_64 kernel it runs through its IA32 emulation) or x86_64 (syscall; "
                                    "x86_64 kernels only)")),
    RunOption("iterations", "iterations", int, "--iterations", dict(
        type=int, metavar="N", help="workload iterations (default: the workload's)")),
    RunOption("append", "append", str, "--append", dict(
        default="", metavar="CMDLINE", help="extra kernel command line words")),
    RunOption("profile", "profile", str, "--profile", dict(
        metavar="NAME|FILE", help="probe profile (default: picked from the symbols)")),
    RunOption("probes", "extra_probes", list, "--probe", dict(
        action="append", default=[], metavar="ROLE=SYMBOL", help="add or override a probe (repeatable)"),
        convert=_parse_probes),
    RunOption("qemu_binary", "qemu", str, "--qemu-binary", dict(
        metavar="PATH", help="the QEMU system emulator (default: picked from the kernel image: "
                             "qemu-system-x86_64 for an x86_64 kernel, qemu-system-i386 for an i386 one)")),
    RunOption("memory", "memory_mb", int, "--memory", dict(
        type=int, metavar="MB", help="guest RAM in MiB (default: 64 for the lab kernel; for a kernel you bring, "
                                     "256 or what its image needs, if more)")),
    RunOption("icount", "icount", bool, "--no-icount", dict(
        action="store_false",
        help="plain TCG without -icount shift=0 (no deterministic instruction count)")),
    RunOption("timeout", "timeout_s", float, "--timeout", dict(
        type=float, default=600.0, metavar="SECONDS",
        help="give up on a guest that has not finished by then (default: 600)"), convert=float),
    RunOption("backend", "backend", str, "--backend", dict(
        default="gdb", choices=BACKENDS,
        help="gdb: counting breakpoints (default); plugin: QEMU TCG plugin, the guest never stops")),
    RunOption("replay", "replay", bool, "--live", dict(
        action="store_false",
        help="count in the live guest instead of a replay of its recording "
             "(breakpoint stops then shift timer interrupts: guest timings change)")),
    RunOption("trace", "trace", bool, "--no-trace", dict(
        action="store_false",
        help="count only; do not follow fault paths (one breakpoint stop less per fault)")),
    RunOption("cost_sample", "cost_sample", int, "--cost-sample", dict(
        type=int, default=1, metavar="N",
        help="cost every Nth fault only (hit counts stay exact; default: every fault)")),
    RunOption("live_patch", None, str, "--live-patch", dict(
        metavar="FILE", help="apply FILE (a patch for the lab kernel, or an i386 .o of replacement functions) "
                             "to the running kernel mid-run; the report splits before/after")),
    RunOption("patch_at", None, int, "--patch-at", dict(
        type=int, metavar="N", help="with --live-patch: apply it after N iterations (0 = before the first; "
                                    "default: half of --iterations)")),
    RunOption("unpatch_at", None, int, "--unpatch-at", dict(
        type=int, metavar="N", help="with --live-patch: put the old function entries back after N iterations")),
    RunOption("recording", "recording", bool, "--no-recording", dict(
        action="store_false",
        help="leave no recording behind: none beside --output (FILE.rr/, for gdbfault inspect) and none in "
             "the recordings cache")),
    RunOption("fresh_recording", "fresh_recording", bool, "--fresh-recording", dict(
        action="store_true",
        help="record the guest anew even when a kept or cached recording of the very same guest exists "
             "(by default such a run replays it instead of booting)")),
    RunOption("keep_run_dir", "keep_run_dir", bool, "--keep-run-dir", dict(
        action="store_true", help="keep QEMU's run directory (serial log)")),
)
OPTION = {opt.key: opt for opt in RUN_OPTIONS}
_KIND_TEXT = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}


def _name(where, key):
    """How a problem names option `key`: its flag on the command line, else its key."""
    return OPTION[key].flag if where is None else key


def _problem(where, key, text, sentence=False):
    """One line: the option and what is wrong with it.

    `sentence`: `text` is a whole message already (on the command line it is shown as is).
    """
    if where is None:
        return text if sentence else f"{OPTION[key].flag} {text}"
    return f"{where(key)} {text}"


def _is_kind(value, kind):
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


def check_mapping(mapping, where=None):
    """Refuse unknown keys and values of the wrong type (one line naming the key)."""
    for key, value in mapping.items():
        opt = OPTION.get(key)
        if opt is None:
            if where is None:        # a key the code made up, not one a user wrote
                raise GdbfaultError(f"unknown run option '{key}'")
            raise GdbfaultError(f"{where(key)} unknown run setting — choose from {', '.join(OPTION)}")
        if value is not None and not _is_kind(value, opt.kind):
            what = _KIND_TEXT[opt.kind] + (" of strings" if opt.kind is list else "")
            raise GdbfaultError(_problem(where, key, f"expected {what}, got {value!r}"))


def _problems(spec):
    """(option key, what is wrong) for every problem of a RunSpec, cheapest first."""
    if spec.iterations is not None and not 1 <= spec.iterations <= MAX_ITERATIONS:
        yield "iterations", (f"must be between 1 and {MAX_ITERATIONS} (the guest counts in 32 bits), "
                             f"not {spec.iterations}")
    said = [w for w in (spec.append or "").split() if w.startswith("iterations=")]
    if spec.iterations is not None and said and said[-1] != f"iterations={spec.iterations}":
        # the guest takes the last word: it would run another count than the one reported
        yield "append", (f"{said[-1]} disagrees with --iterations {spec.iterations}: give the count once "
                         "(--iterations N)")
    if spec.cost_sample <= 0:
        yield "cost_sample", f"must be positive, not {spec.cost_sample}"
    if spec.memory_mb is not None and not 1 <= spec.memory_mb <= 1 << 20:
        yield "memory", f"must be between 1 and {1 << 20} (MiB), not {spec.memory_mb}"
    if spec.workload_abi is not None and spec.workload_abi not in WORKLOAD_ABIS:
        yield "workload_abi", f"must be {' or '.join(WORKLOAD_ABIS)}, not '{spec.workload_abi}'"
    if not spec.timeout_s > 0:
        yield "timeout", f"must be positive, not {spec.timeout_s:g}"
    if spec.kernel == "lab" and spec.system_map:
        # The lab kernel's ELF carries its own symbols; a map would be ignored.
        yield "system_map", ("goes with a kernel you bring (--kernel PATH); the lab kernel has its own ELF "
                             "symbols — drop --system-map")
    if spec.kernel == "lab" and spec.variant not in VARIANTS:
        yield "variant", f"must be a lab kernel variant ({', '.join(VARIANTS)}), not '{spec.variant}'"
    if spec.backend not in BACKENDS:
        yield "backend", f"must be {' or '.join(BACKENDS)}, not '{spec.backend}'"
    if spec.kernel_profile and spec.live_patch is not None:
        yield "live_patch", "does not go with the kernel profile (one kernel changing in one run)"
    yield from _live_patch_problems(spec)


def _live_patch_problems(spec):
    """A live patch's moments: within the workload's iterations, the unpatch after the patch."""
    lp = spec.live_patch
    if lp is None:
        return
    if spec.iterations is None:
        yield "live_patch", "needs --iterations (the patch moment is an iteration)"
        return
    if not spec.workload:
        yield "live_patch", "needs a workload (the patch moment is one of its iterations)"
    at = spec.patch_at()
    if at < 0:
        yield "patch_at", f"must be 0 (before the first iteration) or more, not {at}"
    elif at > spec.iterations:
        yield "patch_at", f"{at} is beyond --iterations {spec.iterations}"
    if lp.unpatch_at is not None:
        if spec.backend != "gdb":
            yield "unpatch_at", "works with --backend gdb only"
        elif not at < lp.unpatch_at <= spec.iterations:
            yield "unpatch_at", (f"{lp.unpatch_at} must be after --patch-at {at} and within --iterations "
                                 f"{spec.iterations}")


def validate_spec(spec):
    """The cheap checks, before anything boots: one line, exit 2."""
    key, text = next(_problems(spec), (None, None))
    if key is not None:
        raise GdbfaultError(_problem(None, key, text))
