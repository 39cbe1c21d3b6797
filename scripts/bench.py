"""`make bench`: what gdbfault costs against what it measures, every ratio in one run.

Each part measures one cost against its yardstick and gives summary rows
(`Ratio`: what, measured, against what, ratio, target); `main` prints the
parts' own tables as they go and all rows side by side at the end:

- old-kernel: the first run of an old kernel (`gdbfault attach --qemu --kernel
  IMAGE --system-map MAP`, image → report: GRUB image or initrd, recording,
  replay under GDB) against one plain boot-to-power-off of the same image under
  `-icount shift=5,sleep=off` with nothing attached (issue 20's yardstick), on
  both old-kernel fixtures (`oldboot-24`, booted by QEMU -kernel like a real
  2.4, and `oldboot`, booted by GRUB like a 2.2), or on `--image`; then a
  second, identical run, which replays the first one's recording from a
  recordings cache of the bench's own ("record once, count many").
- inspect: opening the last fault of a 100,000-iteration recording (`gdbfault
  inspect RUN --fault LAST`) against a replay of the same recording with no
  debugger (target 1.0). The run is recorded once, ~10 min, and kept in
  gdbfault's cache (bench/) or `--inspect-folder` for the next bench.
- profile: `gdbfault profile` (the kernel-profile plugin), flat (the default)
  and with call chains, against an uninstrumented run of the same guest at
  1,000,000 iterations: QEMU's CPU time, each pair started together so that
  both see the same load (targets 1.1 and 1.3).
- seed: the seed's whole study, `gdbfault compare --backend plugin --profile
  --iterations 1000000` (both lab kernels: counts, path costs, the profile),
  against one uninstrumented 1M run of one kernel, by wall time (target 2.0).
- plugin: the zero-stop backend against an uninstrumented run (CPU, paired).
- anchor: the GDB backend's counting throughput against bare GDB
  (../shared/anchors/bare_gdb_count.py: plain `gdb -batch` with counting
  breakpoints, the fastest stock GDB offers) on the same kernel, workload and
  probes, alternating: count-only (target ≥ 1.0) and with path costs.
- x86_64: the zero-stop backend on an x86_64 kernel (Debian's amd64 6.1
  from the cache, or --x86-image) against an uninstrumented run of the same
  guest, mprotect × 200,000 with the native x86_64 workload, three alternating
  pairs at least: QEMU's wall and CPU seconds (target 1.1).
- soak (last in `all`; alone with `--part soak`): 100 short runs in a row,
  half of them stopped by a signal or by killing QEMU or GDB, then 12 `attach
  --socket --live-patch` runs on a QEMU of its own (started as README.md tells
  a user to) with GDB, gdbfault itself (SIGKILL) or QEMU killed ~4 s in,
  checking after each that the guest runs on unpatched; then a count of what
  is left: processes, file descriptors, temp entries.

The machine these run on is shared: wall times swing with other jobs, CPU
times much less, so each part gives both and the load average it ran under.

    python3 scripts/bench.py [--part old-kernel|inspect|profile|seed|plugin|x86_64|anchor|soak|all] [--repeat K]
                             [--variant V] [--workload W] [--iterations N] [--plugin-iterations N]
                             [--profile-iterations N] [--seed-iterations N] [--image BZIMAGE --system-map MAP]
                             [--old-iterations N] [--inspect-iterations N] [--inspect-folder DIR]
                             [--x86-image IMAGE --x86-system-map MAP]
                             [--x86-iterations N] [--workload-abi ABI] [--soak-runs N]
                             [--soak-attach-runs N] [--anchor PATH] [--count-only]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

# Measure the checkout this script is in, not another installed copy of gdbfault.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gdbfault.base.locations import REPO, lab_kernel, workload_binary  # noqa: E402
from gdbfault.runs.booted import run_qemu  # noqa: E402
from gdbfault.model.spec import RunSpec  # noqa: E402

__all__ = ["Ratio", "print_summary", "anchor_script", "run_anchor", "run_gdbfault", "run_uninstrumented",
           "plain_boot", "old_kernel_fixtures", "bench_old_kernel", "bench_open_fault", "bench_profile",
           "bench_seed", "bench_plugin", "plain_run", "cached_x86_64_kernel", "bench_x86_64", "bench_anchor", "soak_attach",
           "soak", "main"]

SYMBOLS = ("do_page_fault", "search_exception_table", "force_sig", "handle_mm_fault")


@dataclass
class Ratio:
    """One row of the final summary: a cost measured against its yardstick."""

    what: str
    measured: str                 # what was timed
    against: str                  # the yardstick
    ratio: float                  # median of the repeats; None: not measured
    target: str = None            # "≤ 1.1", "≥ 1.0", or None (for information)

    def verdict(self):
        """ok or MISSED, for the ratio as the summary shows it (two decimals: the
        repeats of one ratio differ by more than that on a shared machine)."""
        if self.ratio is None or not self.target:
            return "-"
        op, bound = self.target.split()
        shown = round(self.ratio, 2)
        ok = shown <= float(bound) if op == "≤" else shown >= float(bound)
        return "ok" if ok else "MISSED"


def print_summary(rows):
    """Every part's ratios side by side."""
    print(f"\nsummary (load average {_load()}; medians of the repeats, to two decimals; wall ratios swing with "
          "the machine's load, CPU ratios much less)")
    print(tabulate([[r.what, r.measured, r.against, "-" if r.ratio is None else f"{r.ratio:.2f}",
                     r.target or "-", r.verdict()] for r in rows],
                   headers=["what", "measured", "against", "ratio", "target", ""], disable_numparse=True))


def _load():
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _cpu_seconds():
    """CPU seconds used so far by this process and every child it has waited for."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _child_cpu():
    """CPU seconds (user + system) of this process's waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def anchor_script(path=None):
    """The bare-GDB anchor script: `path`, or ../shared/anchors/ beside the checkout."""
    path = Path(path) if path else REPO.parent / "shared" / "anchors" / "bare_gdb_count.py"
    return path if path.is_file() else None


def run_anchor(variant, workload, iterations, icount=True, script=None):
    kernel, _ = lab_kernel(variant)
    cmd = [sys.executable, str(script or anchor_script()), "--kernel", str(kernel),
           "--initrd", str(workload_binary(workload)), "--append", f"iterations={iterations}",
           "--symbols", ",".join(SYMBOLS), "--qemu-arg=-no-reboot"]
    if icount:
        cmd += ["--qemu-arg=-icount", "--qemu-arg=shift=0"]
    cpu0 = _cpu_seconds()
    # The anchor (shared, not ours to edit) leaves its mkdtemp folder behind: give it a
    # TMPDIR of our own and remove that.
    with tempfile.TemporaryDirectory(prefix="bench-anchor-") as private:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "TMPDIR": private})
    cpu = _cpu_seconds() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"anchor failed: {out.stderr.strip()[-300:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {"hits": data["total_hits"], "wall_s": data["wall_s"], "hits_per_s": data["hits_per_s"],
            "hits_per_cpu_s": round(data["total_hits"] / cpu, 1)}


def run_gdbfault(variant, workload, iterations, icount=True, trace=False):
    cpu0 = _cpu_seconds()
    res = run_qemu(RunSpec(variant=variant, workload=workload, iterations=iterations, icount=icount,
                           trace=trace))
    cpu = _cpu_seconds() - cpu0            # the recording's too: it is part of the cost
    r = res.run
    return {"hits": r.hits, "wall_s": r.wall_s, "hits_per_s": r.hits_per_s,
            "hits_per_cpu_s": round(r.hits / cpu, 1), "checks_ok": res.checks_ok}


def run_uninstrumented(variant, workload, iterations, icount=True):
    """Wall time of the same guest with nothing attached (icount like the others, or not)."""
    from gdbfault.machine.config import machine_config
    from gdbfault.machine.qemu import Machine
    kernel, _ = lab_kernel(variant)
    spec = RunSpec(variant=variant, workload=workload, iterations=iterations, icount=icount)
    with Machine(machine_config(spec, kernel, [workload_binary(workload)], None, "plain")) as m:
        t0 = time.monotonic()              # QEMU's life only, like the plugin run's wall_s
        m.start()
        status = m.wait(1800)
        wall = time.monotonic() - t0
    if status != 0:
        raise RuntimeError(f"uninstrumented run failed: status {status}")
    return wall


# -- one QEMU measured in a process of its own, two at a time (paired) -----------------------

# What `--measure KIND` runs: the uninstrumented guest, or gdbfault's run of it.
MEASURE_KINDS = ("plain", "flat", "chains", "plugin")


def measure_one(kind, variant, workload, iterations):
    """{wall, cpu, extra}: one run of KIND in this process; cpu is its children's (QEMU's) CPU seconds."""
    c0 = _child_cpu()
    extra = {}
    if kind == "plain":
        wall = run_uninstrumented(variant, workload, iterations)
    elif kind in ("flat", "chains"):
        from gdbfault.kprofile.run import run_profile
        prof = run_profile(RunSpec(variant=variant, workload=workload, iterations=iterations, timeout_s=1800,
                                   call_chains=kind == "chains"))
        wall = prof["run"]["wall_s"]        # QEMU start to exit, plugin loaded
        acc = prof["accounting"]
        extra = {"kernel": prof["total"]["kernel"], "unexplained": acc["unexplained"]}
    else:
        res = run_qemu(RunSpec(variant=variant, workload=workload, iterations=iterations, backend="plugin",
                               timeout_s=1800))
        wall = res.run.wall_s
        extra = {"hits": res.run.hits, "exact": res.checks_ok}
    return {"wall": wall, "cpu": _child_cpu() - c0, **extra}


def _paired(kind, variant, workload, iterations):
    """(plain, KIND) measured at the same moment, each in a process of its own: both see the same
    load, so their CPU ratio does not swing with it as back-to-back runs do."""
    def start(k):
        return subprocess.Popen([sys.executable, __file__, "--measure", k, "--variant", variant,
                                 "--workload", workload, "--profile-iterations", str(iterations)],
                                stdout=subprocess.PIPE, text=True)
    procs = [start("plain"), start(kind)]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"bench --measure failed (exit {p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


# Issue 20's yardstick for an old kernel: one plain boot-to-power-off of the same
# image under -icount shift=5,sleep=off (the options gdbfault itself booted old
# kernels with before, and what a user runs), with no debugger, no recording and
# none of gdbfault's own machine options (its shift, its -rtc).
PLAIN_BOOT_ICOUNT = "shift=5,sleep=off"


def _without(args, part):
    """argv list `args` without the consecutive words `part`."""
    n = len(part)
    for i in range(len(args) - n + 1):
        if args[i:i + n] == part:
            return args[:i] + args[i + n:]
    return list(args)


def plain_run(spec, options=None):
    """(wall s, CPU s) of one uninstrumented run of what `spec` boots (QEMU's life only): the
    machine a run of it gets (kernels.boot's boot of an image, emulator, -cpu, memory), no
    plugin, no debugger; `options(config, boot)` may change its MachineConfig."""
    from gdbfault.backends.plan import resolve_run
    from gdbfault.machine.qemu import Machine
    plan = resolve_run(spec, probes=False)
    try:
        plan.prepare_machine(role="plain")
        config = options(plan.config, plan.boot) if options else plan.config
        with Machine(config) as m:
            c0 = _child_cpu()
            t0 = time.monotonic()
            m.start()
            status = m.wait(1800)
            wall = time.monotonic() - t0
        cpu = _child_cpu() - c0
    finally:
        plan.close()
    if status != 0:
        raise RuntimeError(f"plain run of {spec.kernel} failed: status {status}")
    return wall, cpu


def plain_boot(image, system_map, workload, iterations, same_options=False):
    """(wall s, CPU s) of one plain boot-to-power-off of a kernel image (QEMU's life only).

    Under PLAIN_BOOT_ICOUNT, or with `same_options` under gdbfault's own machine
    options for the image (its -icount shift and -rtc), still with nothing attached."""
    import dataclasses
    from gdbfault.kernels.boot import OLD_KERNEL_RTC

    def options(config, boot):
        if same_options:
            return dataclasses.replace(config, icount_options=boot.rr_icount, halted=False)
        return dataclasses.replace(config, icount_options=PLAIN_BOOT_ICOUNT, halted=False,
                                   extra_args=_without(config.extra_args, OLD_KERNEL_RTC))
    return plain_run(RunSpec(kernel=str(image), system_map=str(system_map) if system_map else None,
                             workload=workload, iterations=iterations), options)


def old_kernel_fixtures():
    """(name, bzImage, System.map) of the old-kernel fixtures: 2.4-style by QEMU -kernel, 2.2-style by GRUB."""
    build = REPO / "qemu" / "kernel" / "build"
    return [(name, build / name / "bzImage", build / name / "System.map") for name in ("oldboot-24", "oldboot")]


def _private_cache(folder):
    """Point the recordings cache at `folder` (this process and its children); the old setting back."""
    old = os.environ.get("GDBFAULT_RECORDING_CACHE")
    os.environ["GDBFAULT_RECORDING_CACHE"] = str(folder)
    return old


def _restore_cache(old):
    if old is None:
        os.environ.pop("GDBFAULT_RECORDING_CACHE", None)
    else:
        os.environ["GDBFAULT_RECORDING_CACHE"] = old


def bench_old_kernel(image, system_map, workload, iterations, repeat, name=None):
    """The first and the second identical run of an old kernel (image → report) against its plain
    boot, interleaved, with a recordings cache of its own: the first run records afresh (and caches
    its recording), the second replays that recording from the workload's entry snapshot.

    Returns the summary rows (Ratio): each run against the plain boot by wall time (issue 20's
    measure), and the first by CPU time too (gdbfault's processes: QEMU twice, GDB twice, our own
    Python)."""
    import dataclasses
    name = name or Path(image).name
    rows, walls, cpus, seconds = [], [], [], []
    spec = RunSpec(kernel=str(image), system_map=str(system_map) if system_map else None,
                   workload=workload, iterations=iterations)
    with tempfile.TemporaryDirectory(prefix="bench-recordings-") as folder:
        old = _private_cache(folder)
        try:
            for i in range(repeat):
                plain, plain_cpu = plain_boot(image, system_map, workload, iterations)
                same, _ = plain_boot(image, system_map, workload, iterations, same_options=True)
                cpu0 = _cpu_seconds()
                t0 = time.monotonic()
                res = run_qemu(dataclasses.replace(spec, fresh_recording=True))
                full = time.monotonic() - t0
                cpu = _cpu_seconds() - cpu0
                t1 = time.monotonic()
                again = run_qemu(spec)
                second = time.monotonic() - t1
                walls.append(full / plain)
                cpus.append(cpu / plain_cpu)
                seconds.append(second / plain)
                record, replay = res.record.wall_s, res.run.wall_s
                same_counts = ([p.hits.workload for p in res.probes] == [p.hits.workload for p in again.probes]
                               and [p.cost_hist for p in res.paths] == [p.cost_hist for p in again.paths])
                rows.append([i + 1, f"{plain:.2f}", f"{same:.2f}", f"{full:.2f}", f"{full / plain:.2f}",
                             f"{plain_cpu:.2f}", f"{cpu:.2f}", f"{cpu / plain_cpu:.2f}", f"{record:.2f}",
                             f"{replay:.2f}", f"{full - record - replay:.2f}", res.run.hits,
                             "yes" if res.checks and res.checks_ok else "NO", f"{second:.2f}",
                             f"{second / plain:.2f}", again.record.reused or "NO",
                             "yes" if same_counts else "NO"])
        finally:
            _restore_cache(old)
    boot = res.kernel.boot
    print(f"\nold kernel {name}: {image} ({boot['format']}, protocol {boot['boot_protocol']}, "
          f"{boot['boot_path']}, {res.kernel.profile} profile), {workload} × {iterations}; "
          f"gdbfault under -icount {boot['icount']}, replay from {res.mode.replay_start}; "
          f"the run: {res.run.exit}; load {_load()}")
    print(tabulate(rows, headers=["run", "plain boot s", "same options s", "first run s", "ratio", "plain CPU s",
                                  "first run CPU s", "CPU ratio", "record s", "replay s", "rest s", "hits",
                                  "exact", "second run s", "ratio", "replayed from", "same counts"]))
    print(f"plain boot: boot to power-off under -icount {PLAIN_BOOT_ICOUNT}, nothing attached (same options: "
          "under gdbfault's own shift and -rtc); first run: image → report (record: boot + workload, recorded, "
          "one stop at the workload's entry; replay: the counting replay under GDB; rest: set-up and teardown); "
          "second run: the same command again, which replays the first one's recording from the cache")
    return [Ratio(f"first run of an old kernel ({name})", "image → report, wall",
                  f"plain boot ({PLAIN_BOOT_ICOUNT})", statistics.median(walls), "≤ 1.0"),
            Ratio(f"first run of an old kernel ({name})", "image → report, CPU", "plain boot, CPU",
                  statistics.median(cpus), None),
            Ratio(f"second run of an old kernel ({name})", "image → report, wall",
                  f"plain boot ({PLAIN_BOOT_ICOUNT})", statistics.median(seconds), "≤ 0.3")]


def bench_open_fault(iterations, repeat, folder=None):
    """Opening the last fault of a long recording (`gdbfault inspect RUN --fault LAST`, all of it: the
    checks, the replay to the fault from the nearest keyframe, its call tree, GDB and the card) against
    replaying the same recording with no debugger (QEMU from its first instruction to the end).
    The run is recorded once and kept in `folder` (default: gdbfault's cache, bench/), reused when it
    is there. Returns the summary rows (Ratio)."""
    from gdbfault.base.locations import cache_dir
    from gdbfault.inspect.fault import open_fault
    from gdbfault.inspect.replay import KeptRecording, Scratch
    from gdbfault.views.report import load_run, save_run
    folder = Path(folder) if folder else cache_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    run_file = folder / f"run-{iterations}.json"
    if not run_file.is_file():
        old = _private_cache("off")
        try:
            t0 = time.monotonic()
            print(f"\ninspect: recording and counting {iterations:,} iterations once (kept in {folder}) ...")
            res = run_qemu(RunSpec(iterations=iterations, keep_recording=f"{run_file}.rr", timeout_s=4 * 3600))
            res.recording.dir = Path(f"{run_file}.rr").name
            save_run(res, run_file)
            print(f"recorded and counted {iterations:,} iterations in {time.monotonic() - t0:.0f} s")
        finally:
            _restore_cache(old)
    result = load_run(run_file)
    rec = result.recording
    rows, ratios = [], []
    for i in range(repeat):
        kept = KeptRecording(run_file, result)
        scratch = Scratch(kept)
        try:
            c0, t0 = _child_cpu(), time.monotonic()
            replay = scratch.start(kept.nearest_snapshot(0))
            try:
                replay.qmp.cmd("cont")
                status = replay.machine.wait(3600)
            finally:
                replay.close()
            plain, plain_cpu = time.monotonic() - t0, _child_cpu() - c0
        finally:
            scratch.close()
        c0, t0 = _child_cpu(), time.monotonic()
        data = open_fault(run_file, result, lambda index: index.number(len(index)), commands=["reverse-stepi"])
        opened, opened_cpu = time.monotonic() - t0, _child_cpu() - c0
        ratios.append(opened / plain)
        rows.append([i + 1, f"{plain:.2f}", f"{plain_cpu:.2f}", f"{opened:.2f}", f"{opened_cpu:.2f}",
                     f"{opened / plain:.2f}", status, f"{data['fault']['index']:,} ({data['fault']['cost']} insns)"])
    print(f"\nopening the last fault of a {iterations:,}-iteration recording (lab kernel, mprotect; kept: "
          f"{rec.size_bytes / 1e6:.1f} MB, {rec.keyframes} keyframes; {run_file}): gdbfault inspect --fault LAST "
          f"against a replay of the same recording with no debugger, from its first instruction to its end; "
          f"load {_load()}")
    print(tabulate(rows, headers=["run", "plain replay s", "its CPU s", "inspect s", "its CPU s",
                                  "inspect/replay", "replay exit", "fault opened"]))
    return [Ratio(f"open the last fault of {iterations:,} iterations", "gdbfault inspect --fault LAST, wall",
                  "plain replay of the recording", statistics.median(ratios), "≤ 1.0")]


def bench_profile(variant, workload, iterations, repeat):
    """The kernel-profile plugin, flat (the default) and with call chains, against the
    uninstrumented guest: paired runs, alternating the two modes; QEMU's CPU time decides."""
    rows, ratios = [], {"flat": [], "chains": []}
    for i in range(repeat):
        for mode in ("flat", "chains"):
            load = _load()
            plain, prof = _paired(mode, variant, workload, iterations)
            ratios[mode].append(prof["cpu"] / plain["cpu"])
            rows.append([i + 1, mode, load, f"{plain['wall']:.2f}", f"{prof['wall']:.2f}", f"{plain['cpu']:.2f}",
                         f"{prof['cpu']:.2f}", f"{prof['cpu'] / plain['cpu']:.2f}", f"{prof['kernel']:,}",
                         f"{prof['unexplained']:+,}" if prof["unexplained"] is not None else "-"])
    print(f"\nkernel profile (gdbfault profile): lab kernel ({variant}), {workload} × {iterations:,}, "
          "-icount shift=0; each pair (uninstrumented, profile) started together; seconds of each QEMU "
          "(boot included)")
    print(tabulate(rows, headers=["pair", "profile", "load", "plain wall", "profile wall", "plain CPU",
                                  "profile CPU", "CPU ratio", "kernel insns", "vs guest cycles"]))
    print("vs guest cycles: kernel + user − guest cycles − faulting blocks (0 = exact; +1 when a "
          "fault hits a block's last instruction)")
    return [Ratio("kernel profile, flat (default)", "QEMU CPU, mprotect × 1M", "uninstrumented run, paired",
                  statistics.median(ratios["flat"]), "≤ 1.1"),
            Ratio("kernel profile, call chains (--chains)", "QEMU CPU, mprotect × 1M",
                  "uninstrumented run, paired", statistics.median(ratios["chains"]), "≤ 1.3")]


def bench_seed(iterations, repeat):
    """The seed's whole study, `compare --backend plugin --profile` (two kernels, counts, path
    costs and the profile, one QEMU per kernel carrying both plugins, both at once), against one
    uninstrumented run of one kernel: wall time, interleaved. The yardstick of each round is the
    mean of the plain runs just before and just after the study (the machine's load drifts)."""

    def plain_run():
        c0 = _child_cpu()
        wall = run_uninstrumented("vanilla", "mprotect", iterations)
        return wall, _child_cpu() - c0
    rows, walls, cpus = [], [], []
    after = plain_run()
    for i in range(repeat):
        load = _load()
        before = after
        c0, t0 = _child_cpu(), time.monotonic()
        done = subprocess.run([sys.executable, "-m", "gdbfault", "compare", "--backend", "plugin", "--profile",
                               "--iterations", str(iterations), "--format", "json"], capture_output=True,
                              text=True, timeout=3600, cwd=REPO)
        wall, cpu = time.monotonic() - t0, _child_cpu() - c0
        if done.returncode != 0:
            raise RuntimeError(f"compare failed: {done.stderr.strip()[-300:]}")
        after = plain_run()
        plain, plain_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        cmp = json.loads(done.stdout)
        top = cmp["profile_changes"]["rows"][0]
        walls.append(wall / plain)
        cpus.append(cpu / 2 / plain_cpu)
        rows.append([i + 1, load, f"{plain:.2f}", f"{wall:.2f}", f"{wall / plain:.2f}", f"{plain_cpu:.2f}",
                     f"{cpu:.2f}", f"{cpu / 2 / plain_cpu:.2f}",
                     f"{top['symbol']} {top['before']:g} → {top['after']:g}"])
    print(f"\nthe seed's study: gdbfault compare --backend plugin --profile --iterations {iterations:,} "
          "(vanilla and patched at once, each QEMU with both plugins) against one uninstrumented run of "
          "the vanilla kernel")
    print(tabulate(rows, headers=["run", "load", "plain wall", "compare wall", "ratio", "plain CPU",
                                  "compare CPU", "CPU per kernel", "biggest change"]))
    print("plain: the mean of the uninstrumented runs just before and after; compare: the whole command "
          "(Python, both QEMUs, the reports); CPU per kernel: its CPU ÷ 2 ÷ the plain run's, about the wall ratio "
          "a machine with two idle cores would see")
    return [Ratio("seed study (compare --backend plugin --profile)", f"wall, 2 kernels × {iterations:,}",
                  "one uninstrumented run of one kernel", statistics.median(walls), "≤ 2.0"),
            Ratio("seed study, CPU per kernel", "CPU ÷ 2", "one uninstrumented run, CPU",
                  statistics.median(cpus), None)]


def bench_plugin(variant, workload, iterations, gdb_iterations, repeat):
    """The zero-stop backend against the uninstrumented guest (paired, CPU), the GDB backend's time beside it."""
    rows, ratios = [], []
    for i in range(repeat):
        load = _load()
        plain, plugin = _paired("plugin", variant, workload, iterations)
        ratios.append(plugin["cpu"] / plain["cpu"])
        rows.append([i + 1, load, f"{plain['wall']:.2f}", f"{plugin['wall']:.2f}", f"{plain['cpu']:.2f}",
                     f"{plugin['cpu']:.2f}", f"{plugin['cpu'] / plain['cpu']:.2f}", plugin["hits"],
                     "yes" if plugin["exact"] else "NO"])
    t0 = time.monotonic()
    gdb = run_qemu(RunSpec(variant=variant, workload=workload, iterations=gdb_iterations))
    gdb_wall = time.monotonic() - t0
    print(f"\nzero-stop backend: lab kernel ({variant}), {workload} × {iterations:,}, -icount shift=0; each pair "
          "(uninstrumented, plugin) started together; seconds of each QEMU (boot included, gdbfault's set-up not)")
    print(tabulate(rows, headers=["pair", "load", "plain wall", "plugin wall", "plain CPU", "plugin CPU",
                                  "CPU ratio", "plugin hits", "exact"]))
    per_iter = gdb_wall / gdb_iterations
    plugin_wall = statistics.median(float(r[3]) for r in rows)
    print(f"GDB backend (record + replay under breakpoints), {workload} × {gdb_iterations}: {gdb_wall:.1f} s "
          f"({gdb.run.hits_per_s:.0f} hits/s); at {iterations:,} iterations that is about "
          f"{per_iter * iterations:.0f} s, {per_iter * iterations / plugin_wall:.0f}× the plugin")
    return [Ratio("zero-stop backend (--backend plugin)", f"QEMU CPU, {workload} × {iterations:,}",
                  "uninstrumented run, paired", statistics.median(ratios), "≤ 1.3")]


def cached_x86_64_kernel():
    """(vmlinuz, System.map) of Debian's amd64 kernel in the cache (scripts/fetch-debian-kernel.sh
    --flavour amd64), or None."""
    from gdbfault.base.locations import cache_dir
    maps = sorted((cache_dir() / "kernels").glob("debian-6.1.0-*-amd64/System.map"))
    return (maps[-1].parent / "vmlinuz", maps[-1]) if maps else None


def bench_x86_64(image, system_map, workload, abi, iterations, repeat):
    """The zero-stop backend on an x86_64 kernel against an uninstrumented run of the same guest
    (same boot, emulator, -cpu, memory, -icount shift=0), alternating; QEMU's wall and CPU
    seconds. Returns the summary rows (Ratio)."""
    rows, walls, cpus = [], [], []
    spec = RunSpec(kernel=str(image), system_map=str(system_map), workload=workload, workload_abi=abi,
                   iterations=iterations, backend="plugin")
    for i in range(repeat):
        c0 = _child_cpu()
        plain, _ = plain_run(spec)
        c1 = _child_cpu()
        res = run_qemu(spec)
        c2 = _child_cpu()
        wall = res.run.wall_s               # QEMU start to exit, plugin loaded
        walls.append(wall / plain)
        cpus.append((c2 - c1) / (c1 - c0))
        signal = res.probe("signal forced").hits.workload
        rows.append([i + 1, f"{plain:.2f}", f"{wall:.2f}", f"{wall / plain:.2f}", f"{c1 - c0:.2f}",
                     f"{c2 - c1:.2f}", f"{(c2 - c1) / (c1 - c0):.2f}", res.run.hits,
                     "yes" if res.checks_ok and signal == res.guest["sigsegv"] else "NO"])
    print(f"\nzero-stop backend on x86_64: {Path(image).name} ({res.kernel.boot['boot_path']} boot), "
          f"{workload} × {iterations:,}, {abi or 'i386'} workload, {res.tool.emulator} -cpu {res.mode.cpu}, "
          f"-icount {res.kernel.boot['icount']}; seconds of the QEMU process (boot included)")
    print(tabulate(rows, headers=["run", "plain wall", "plugin wall", "ratio", "plain CPU", "plugin CPU", "ratio",
                                  "plugin hits", "exact"]))
    print(f"median ratio plugin/uninstrumented: wall {statistics.median(walls):.2f}, "
          f"CPU {statistics.median(cpus):.2f} (target ≤ 1.1)")
    return [Ratio("zero-stop backend on x86_64", f"QEMU CPU, {workload} × {iterations:,}",
                  "uninstrumented run, alternating", statistics.median(cpus), "≤ 1.1")]


def bench_anchor(a, script):
    """GDB backend hits per second against bare GDB's, alternating; count-only (and with path costs)."""
    rows = []
    modes = ("count",) if a.count_only else ("count", "trace")
    ratios = {(m, unit): [] for m in modes for unit in ("wall", "cpu")}
    exact = True
    for i in range(a.repeat):
        # Alternate them so machine noise hits them alike; ratios are taken per round.
        an = run_anchor(a.variant, a.workload, a.iterations, a.icount, script)
        row = [i + 1, _load(), an["hits"], an["hits_per_s"], an["hits_per_cpu_s"]]
        for mode in modes:
            got = run_gdbfault(a.variant, a.workload, a.iterations, a.icount, trace=mode == "trace")
            exact = exact and got["checks_ok"] and got["hits"] == an["hits"]
            wall, cpu = got["hits_per_s"] / an["hits_per_s"], got["hits_per_cpu_s"] / an["hits_per_cpu_s"]
            ratios[mode, "wall"].append(wall)
            ratios[mode, "cpu"].append(cpu)
            row += [got["hits"], got["hits_per_s"], f"{wall:.2f}", got["hits_per_cpu_s"], f"{cpu:.2f}"]
        rows.append(row)
    print(f"\nGDB backend against bare GDB: lab kernel ({a.variant}), workload {a.workload} × {a.iterations}, "
          f"probes {', '.join(SYMBOLS)}, {'-icount shift=0' if a.icount else 'plain TCG'}")
    headers = ["run", "load", "anchor hits", "hits/s", "hits/CPU s"]
    for mode in modes:
        headers += [f"{mode} hits", "hits/s", "ratio", "hits/CPU s", "CPU ratio"]
    print(tabulate(rows, headers=headers))
    print(f"counts exact (equal to the anchor's and to the guest's own summary): {'yes' if exact else 'NO'}")
    print("gdbfault counts in a replay of a recording (zero observer effect); the anchor counts live. "
          "trace: counting + path costs (a stop at each fault's return too)")
    out = []
    for mode, what, target in (("count", "GDB backend, count-only (--no-trace)", "≥ 1.0"),
                               ("trace", "GDB backend, with path costs (default)", None)):
        if mode in modes:
            out += [Ratio(what, "hits/s", "bare GDB (anchor)", statistics.median(ratios[mode, "wall"]), target),
                    Ratio(what, "hits per CPU s", "bare GDB (anchor)", statistics.median(ratios[mode, "cpu"]),
                          None)]
    return out


# One soak round: how each run ends, and the exit code that says so.
SOAK_PATTERN = (("complete", 0), ("complete", 0), ("SIGTERM", 143), ("complete", 0), ("SIGINT", 130),
                ("complete", 0), ("kill QEMU", 3), ("complete", 0), ("SIGHUP", 129), ("kill GDB", 2))


def _soak_parts(tag):
    """Live QEMU/GDB processes started during the soak (tagged through their environment)."""
    import psutil
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in ("qemu-system-i386", "gdb") and proc.status() != psutil.STATUS_ZOMBIE \
                    and proc.environ().get("GDBFAULT_SOAK") == tag:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _soak_cli_run(how, iterations, env):
    """A `python -m gdbfault attach --qemu` that gets a signal or loses QEMU or GDB mid-replay."""
    import os
    import signal
    import psutil
    proc = subprocess.Popen([sys.executable, "-m", "gdbfault", "attach", "--qemu", "--quiet",
                             "--iterations", str(iterations), "--format", "json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    target = None
    while time.monotonic() < deadline and proc.poll() is None and target is None:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
            for kid in kids:               # the replay: GDB attached to a QEMU under rr=replay
                cmd = " ".join(kid.cmdline())
                if "rr=replay" in cmd and how == "kill QEMU" or "--interpreter=mi" in cmd and how != "kill QEMU":
                    target = kid
        except psutil.Error:
            pass
        time.sleep(0.05)
    time.sleep(0.5)
    if proc.poll() is None:
        if how.startswith("SIG"):
            proc.send_signal(getattr(signal, how))
        elif target is not None:
            try:
                target.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
    try:
        return proc.wait(120)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()


# The temp folders the soak's runs make (lab kernel, attach, live patch): gdbfault-KIND-*.
SOAK_FOLDERS = ("run", "rec", "attach", "livepatch")
# The attach rounds of the soak: what is killed, and the exit code that says so (-9: gdbfault itself).
ATTACH_SOAK_PATTERN = (("kill GDB", 2), ("SIGKILL gdbfault", -9), ("kill QEMU", 3))
SEED_PATCH = REPO / "qemu" / "kernel" / "patches" / "0001-user-faults-skip-exception-table.patch"


def _user_qemu(folder, env):
    """A QEMU started the way README.md tells a user to (for `attach --socket`), running the workload."""
    import time
    kernel, _ = lab_kernel("vanilla")
    folder.mkdir(mode=0o700)
    proc = subprocess.Popen(["qemu-system-i386", "-display", "none", "-no-reboot", "-kernel", str(kernel),
                             "-initrd", str(workload_binary("mprotect")), "-append", "iterations=100000000",
                             "-serial", f"file:{folder}/serial.log",
                             "-gdb", f"unix:{folder}/gdb.sock,server=on,wait=off",
                             "-qmp", f"unix:{folder}/qmp.sock,server=on,wait=off"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        log = folder / "serial.log"
        if log.is_file() and "GDBFAULT-START" in log.read_text(errors="replace"):
            break
        time.sleep(0.1)
    return proc


def _guest_as_found(folder, entry_address, entry):
    """Is the user's guest running (and still, a second later: no breakpoint left), with its old entry?"""
    import time
    from gdbfault.machine.rescue import GdbStub, qmp_status
    qmp = folder / "qmp.sock"
    if qmp_status(qmp) != "running":
        return False
    time.sleep(1.0)
    if qmp_status(qmp) != "running":
        return False
    with GdbStub(str(folder / "gdb.sock"), timeout=15.0) as stub:    # (a loaded machine is slow to answer)
        stub.stop_reason()
        now = stub.read(entry_address, len(entry))
        stub.detach()
    return now == entry and qmp_status(qmp) == "running"


def _soak_attach_run(how, folder, env):
    """One `gdbfault attach --socket … --live-patch` on the user's QEMU, with a part killed ~4 s in."""
    import os
    import signal
    import time
    import psutil
    proc = subprocess.Popen([sys.executable, "-m", "gdbfault", "attach", "--socket", str(folder / "gdb.sock"),
                             "--live-patch", str(SEED_PATCH), "--quiet", "--format", "json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    gdb = None
    while gdb is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            gdb = next((k for k in psutil.Process(proc.pid).children(recursive=True)
                        if k.name() == "gdb" and "--interpreter=mi3" in k.cmdline()), None)   # not `gdb --version`
        except psutil.Error:
            pass
        time.sleep(0.1)
    time.sleep(4)
    victim = {"kill GDB": gdb, "SIGKILL gdbfault": psutil.Process(proc.pid)}.get(how)
    try:
        if how == "kill QEMU":
            os.kill(int((folder / "pid").read_text()), signal.SIGKILL)
        elif victim is not None:
            victim.kill()
    except (psutil.Error, OSError):
        pass
    try:
        _, err = proc.communicate(timeout=120)      # (after a SIGKILL: until the guardian is done)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, (err.strip().splitlines() or [""])[-1]


def soak_attach(rounds, env, base):
    """Attach rounds on a QEMU of our own, with GDB, gdbfault or QEMU killed; the guest checked after each.
    Returns (tally, problems)."""
    import collections
    import shutil
    kernel, system_map = lab_kernel("vanilla")
    address = next(int(line.split()[0], 16) for line in open(system_map) if line.split()[2:] == ["do_page_fault"])
    from gdbfault.kernels.identity import image_code
    entry = image_code(kernel).read(address, 5)
    tally, problems = collections.Counter(), []
    folder, qemu, n = None, None, 0
    try:
        for i in range(rounds):
            if qemu is None or qemu.poll() is not None:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                n += 1
                folder = base / f"myvm-{n}"
                qemu = _user_qemu(folder, env)
                (folder / "pid").write_text(str(qemu.pid))
            how, expected = ATTACH_SOAK_PATTERN[i % len(ATTACH_SOAK_PATTERN)]
            code, said = _soak_attach_run(how, folder, env)
            tally[how] += 1
            if code != expected:
                problems.append(f"attach round {i + 1} ({how}): exit {code}, expected {expected}: {said}")
            if how != "kill QEMU":
                ok = False
                try:
                    ok = _guest_as_found(folder, address, entry)
                except Exception as exc:        # reported as a problem like any other
                    problems.append(f"attach round {i + 1} ({how}): guest unreadable: {exc}")
                tally["guest running, unpatched"] += ok
                if not ok:
                    problems.append(f"attach round {i + 1} ({how}): the guest was not left running and "
                                    f"unpatched; gdbfault said: {said}")
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return tally, problems


def soak(runs=100, iterations=20, kill_iterations=2000, variant="vanilla", attach_rounds=12):
    """Consecutive short runs, mixed with stopped and killed ones; 0 leaks expected. Exit 0/1."""
    import collections
    import os
    import shutil
    import time
    import uuid
    import psutil
    tag = uuid.uuid4().hex
    private = Path(tempfile.mkdtemp(prefix="gf-soak-"))
    old_env = {k: os.environ.get(k) for k in ("TMPDIR", "GDBFAULT_SOAK")}
    os.environ.update(TMPDIR=str(private), GDBFAULT_SOAK=tag)
    tempfile.tempdir = None
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    me = psutil.Process()
    fallback = set(Path("/tmp").glob("gdbfault-*"))
    fds_before = me.num_fds()
    tally = collections.Counter()
    wrong = []
    t0 = time.monotonic()
    try:
        for i in range(runs):
            how, expected = SOAK_PATTERN[i % len(SOAK_PATTERN)]
            if how == "complete":        # in this process: its fds must not grow
                res = run_qemu(RunSpec(variant=variant, iterations=iterations))
                code = 0 if res.checks_ok else 1
            else:
                code = _soak_cli_run(how, kill_iterations, env)
            tally[how] += 1
            if code != expected:
                wrong.append(f"run {i + 1} ({how}): exit {code}, expected {expected}")
        wall = time.monotonic() - t0
        t1 = time.monotonic()
        attach_tally, attach_problems = soak_attach(attach_rounds, env, private) if attach_rounds else ({}, [])
        wrong += attach_problems
        attach_wall = time.monotonic() - t1
        time.sleep(1.0)
        parts = _soak_parts(tag)
        fds_after = me.num_fds()
        entries = sorted(p.name for p in private.iterdir())
        # /tmp is shared: another session's run can have a folder there for a while (a kernel brought
        # as an image makes gdbfault-boot-*, which the soak's lab-kernel runs never do); ours would stay.
        settle = time.monotonic() + 30
        while (new_fallback := sorted(str(p) for p in set(Path("/tmp").glob("gdbfault-*")) - fallback
                                      if p.name.split("-")[1] in SOAK_FOLDERS)) and time.monotonic() < settle:
            time.sleep(1.0)
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        tempfile.tempdir = None
        for proc in _soak_parts(tag):        # (a leak is reported above, then cleaned)
            proc.kill()
        shutil.rmtree(private, ignore_errors=True)
    print(f"\nsoak: {runs} runs in a row on the lab kernel ({variant}), {wall:.0f} s: "
          + ", ".join(f"{n} {how}" for how, n in tally.items()))
    if attach_rounds:
        print(f"soak, attach: {attach_rounds} attach --socket --live-patch runs on a QEMU of its own, "
              f"{attach_wall:.0f} s: " + ", ".join(f"{n} {how}" for how, n in attach_tally.items()))
    print(tabulate([["QEMU/GDB processes left", len(parts)],
                    ["file descriptors of this process, before → after", f"{fds_before} → {fds_after}"],
                    ["entries left in the private TMPDIR", len(entries)],
                    ["gdbfault-* entries left in /tmp (still there 30 s on)", len(new_fallback)],
                    ["runs with an unexpected exit code, or a guest not left as found", len(wrong)]],
                   headers=["leak check", "value"]))
    for line in wrong[:10]:
        print("  " + line)
    leaked = parts or fds_after > fds_before or entries or new_fallback or wrong
    print("soak: " + ("LEAKS OR WRONG EXIT CODES (see above)" if leaked else "0 leaks, every exit code as documented"))
    return 1 if leaked else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000, help="anchor part: workload iterations")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variant", default="vanilla")
    ap.add_argument("--workload", default="mprotect")
    ap.add_argument("--no-icount", dest="icount", action="store_false", help="anchor part: plain TCG")
    ap.add_argument("--part", choices=("old-kernel", "inspect", "profile", "seed", "plugin", "x86_64", "anchor", "soak", "all"),
                    default="all", help="old-kernel: first and second run vs plain boot; inspect: open the last fault "
                    "of a long recording vs a plain replay of it; profile: kernel profile overhead; "
                    "seed: the seed's study vs one plain run; plugin: zero-stop backend; x86_64: the zero-stop backend "
                    "on an x86_64 kernel; anchor: GDB throughput "
                    "vs bare GDB; soak: reliability; all: each, then the summary")
    ap.add_argument("--plugin-iterations", type=int, default=100000)
    ap.add_argument("--profile-iterations", type=int, default=1000000)
    ap.add_argument("--seed-iterations", type=int, default=1000000)
    ap.add_argument("--image", help="old-kernel part: a kernel image (default: the oldboot fixtures)")
    ap.add_argument("--system-map", help="old-kernel part: the image's System.map")
    ap.add_argument("--old-iterations", type=int, default=50,
                    help="old-kernel part: workload iterations (default 50: the boot is what is timed)")
    ap.add_argument("--inspect-iterations", type=int, default=100000,
                    help="inspect part: the recording whose last fault is opened (default 100,000 iterations)")
    ap.add_argument("--inspect-folder", help="inspect part: keep (and reuse) its recording there "
                                             "(default: gdbfault's cache, bench/)")
    ap.add_argument("--x86-image", help="x86_64 part: an x86_64 kernel image (default: Debian's amd64 kernel "
                                        "in the cache, from scripts/fetch-debian-kernel.sh --flavour amd64)")
    ap.add_argument("--x86-system-map", help="x86_64 part: the image's System.map")
    ap.add_argument("--x86-iterations", type=int, default=200000)
    ap.add_argument("--workload-abi", choices=("i386", "x86_64"), default="x86_64",
                    help="x86_64 part: the workload's ABI (default: native x86_64)")
    ap.add_argument("--soak-runs", type=int, default=100)
    ap.add_argument("--soak-attach-runs", type=int, default=12,
                    help="soak: attach runs on a QEMU of its own with GDB, gdbfault or QEMU killed (default 12)")
    ap.add_argument("--count-only", action="store_true",
                    help="anchor part: skip the path-tracing runs")
    ap.add_argument("--anchor", metavar="PATH",
                    help="bare_gdb_count.py (default: ../shared/anchors/ beside the checkout)")
    ap.add_argument("--measure", choices=MEASURE_KINDS, help=argparse.SUPPRESS)   # one run, for _paired
    a = ap.parse_args(argv)
    if a.measure:
        print(json.dumps(measure_one(a.measure, a.variant, a.workload, a.profile_iterations)))
        return 0
    if a.part == "soak":
        return soak(a.soak_runs, variant=a.variant, attach_rounds=a.soak_attach_runs)
    from gdbfault.machine.plugins import PluginUnavailable, plugin_library
    parts = ("old-kernel", "inspect", "profile", "seed", "plugin", "x86_64", "anchor") if a.part == "all" else (a.part,)
    summary = []
    for part in parts:
        try:
            if part == "old-kernel":
                images = [(None, Path(a.image), Path(a.system_map) if a.system_map else None)] if a.image \
                    else old_kernel_fixtures()
                for name, image, system_map in images:
                    summary += bench_old_kernel(image, system_map, a.workload, a.old_iterations, a.repeat, name)
            elif part == "inspect":
                plugin_library("kprofile")
                summary += bench_open_fault(a.inspect_iterations, a.repeat, a.inspect_folder)
            elif part == "profile":
                plugin_library("kprofile")
                summary += bench_profile(a.variant, a.workload, a.profile_iterations, a.repeat)
            elif part == "seed":
                plugin_library("kprofile")
                plugin_library("faultcount")
                summary += bench_seed(a.seed_iterations, a.repeat)
            elif part == "plugin":
                plugin_library("faultcount")
                summary += bench_plugin(a.variant, a.workload, a.plugin_iterations, a.iterations, a.repeat)
            elif part == "x86_64":
                kernel = (a.x86_image, a.x86_system_map) if a.x86_image else cached_x86_64_kernel()
                if kernel is None:
                    print("\nx86_64: skipped (no x86_64 kernel: give --x86-image/--x86-system-map, or fetch one "
                          "with scripts/fetch-debian-kernel.sh --flavour amd64)")
                    continue
                plugin_library("faultcount")
                summary += bench_x86_64(*kernel, a.workload, a.workload_abi, a.x86_iterations, max(a.repeat, 3))
            else:
                script = anchor_script(a.anchor)
                if script is None:
                    print(f"bench: anchor script {a.anchor or '../shared/anchors/bare_gdb_count.py'} not found "
                          "(give it with --anchor PATH)", file=sys.stderr)
                    if a.part == "anchor":
                        return 2
                    continue
                summary += bench_anchor(a, script)
        except PluginUnavailable as exc:
            print(f"\n{part}: skipped ({exc})")
    print_summary(summary)
    return soak(a.soak_runs, variant=a.variant, attach_rounds=a.soak_attach_runs) if a.part == "all" else 0


if __name__ == "__main__":
    sys.exit(main())
