"""`make bench`: gdbfault's counting throughput against bare GDB.

Runs ../shared/anchors/bare_gdb_count.py (plain `gdb -batch` with counting
breakpoints, the fastest stock GDB offers) and `gdbfault attach --qemu` on the
same lab kernel, workload and probes, alternating them, and prints hits/s and
the ratio gdbfault/anchor (1.0 = no per-hit cost added over bare GDB).
Timings are wall clock on a shared machine: trust the ratio, not the seconds.
Each run's CPU seconds (QEMU, GDB and our own Python, all of them) are
measured too: on a loaded machine hits per CPU second is the steadier figure.

    python3 scripts/bench.py [--iterations N] [--repeat K] [--variant V] [--workload W]
                             [--part anchor|plugin|profile|old-kernel|x86_64|soak|all] [--plugin-iterations N]
                             [--profile-iterations N] [--image BZIMAGE --system-map MAP] [--soak-runs N]
                             [--x86-image IMAGE --x86-system-map MAP] [--x86-iterations N] [--workload-abi ABI]
                             [--anchor PATH] [--count-only]

The plugin part runs the zero-stop backend against an uninstrumented run of
the same guest (100,000 iterations by default) and puts the GDB backend's
time beside it. The profile part runs `gdbfault profile` (the kernel-profile
plugin) against an uninstrumented run of the same guest at 1,000,000
iterations (target: at most 1.5× its time).

The old-kernel part times a kernel brought as an image: from the image to
the report (`gdbfault attach --qemu --kernel IMAGE --system-map MAP`, all
of it: GRUB image, initrd, record, replay under GDB) against one plain
uninstrumented boot-to-power-off of the same image with the same workload
(QEMU's life only, plain TCG, no icount, no debugger). The image is the
lab kernel packaged as a 2.2-style bzImage (qemu/kernel/variants/oldboot),
or any image given with --image. Each row also splits gdbfault's time into
the recording, the counting replay and the rest (set-up and teardown).

The x86_64 part runs the zero-stop backend on an x86_64 kernel (Debian's
amd64 6.1 from the cache, or --x86-image) against an uninstrumented run of
the same guest, mprotect × 200,000 with the native x86_64 workload, three
alternating pairs at least, and prints the ratios of QEMU's wall and CPU
seconds (target: at most 1.1).

The soak part (last in `all`; alone with `--part soak`) runs 100 short
runs in a row, half of them stopped by a signal or by killing QEMU or GDB,
and counts what is left at the end: processes, file descriptors, temp entries.
"""
import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from gdbfault.base.locations import REPO, lab_kernel, workload_binary
from gdbfault.runs.booted import run_qemu
from gdbfault.model.spec import RunSpec

__all__ = ["anchor_script", "run_anchor", "run_gdbfault", "plain_run", "plain_boot", "bench_old_kernel",
           "bench_x86_64", "cached_x86_64_kernel", "bench_second_run", "bench_open_fault", "main"]

SYMBOLS = ("do_page_fault", "search_exception_table", "force_sig", "handle_mm_fault")


def anchor_script(path=None):
    """The bare-GDB anchor script: `path`, or ../shared/anchors/ beside the checkout."""
    path = Path(path) if path else REPO.parent / "shared" / "anchors" / "bare_gdb_count.py"
    return path if path.is_file() else None


def _cpu_seconds():
    """CPU seconds used so far by this process and every child it has waited for."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_anchor(variant, workload, iterations, icount=True, script=None):
    kernel, _ = lab_kernel(variant)
    cmd = [sys.executable, str(script or anchor_script()), "--kernel", str(kernel),
           "--initrd", str(workload_binary(workload)), "--append", f"iterations={iterations}",
           "--symbols", ",".join(SYMBOLS), "--qemu-arg=-no-reboot"]
    if icount:
        cmd += ["--qemu-arg=-icount", "--qemu-arg=shift=0"]
    cpu0 = _cpu_seconds()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
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
    import time
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


def bench_plugin(variant, workload, iterations, gdb_iterations, repeat, icount=True):
    """Zero-stop backend vs no instrumentation, with the GDB backend beside it."""
    import time
    rows, ratios = [], []
    for i in range(repeat):
        plain = run_uninstrumented(variant, workload, iterations, icount)
        res = run_qemu(RunSpec(variant=variant, workload=workload, iterations=iterations,
                               backend="plugin", icount=icount))
        plugin = res.run.wall_s             # QEMU start to exit, plugin loaded
        ratios.append(plugin / plain)
        rows.append([i + 1, f"{plain:.2f}", f"{plugin:.2f}", f"{plugin / plain:.2f}", res.run.hits,
                     "yes" if res.checks_ok else "NO"])
    t0 = time.monotonic()
    gdb = run_qemu(RunSpec(variant=variant, workload=workload, iterations=gdb_iterations))
    gdb_wall = time.monotonic() - t0
    print(f"\nzero-stop backend: lab kernel ({variant}), {workload} × {iterations}, "
          f"{'-icount shift=0' if icount else 'plain TCG'}, "
          "wall seconds of the QEMU process (boot included, gdbfault's own set-up not)")
    print(tabulate(rows, headers=["run", "uninstrumented s", "plugin s", "ratio", "plugin hits", "exact"]))
    print(f"median ratio plugin/uninstrumented: {statistics.median(ratios):.2f} (target ≤ 1.3)")
    per_iter = gdb_wall / gdb_iterations
    print(f"GDB backend (record + replay under breakpoints), {workload} × {gdb_iterations}: {gdb_wall:.1f} s "
          f"({gdb.run.hits_per_s:.0f} hits/s); at {iterations} iterations that is about "
          f"{per_iter * iterations:.0f} s, {per_iter * iterations / statistics.median([float(r[2]) for r in rows]):.0f}× "
          "the plugin")


def plain_run(spec):
    """Seconds of one uninstrumented run of what `spec` boots (QEMU's life only): the same
    machine a run of it gets (kernels.boot's boot of an image, emulator, -cpu, memory),
    no plugin, no debugger."""
    import time
    from gdbfault.backends.plan import resolve_run
    from gdbfault.machine.qemu import Machine
    plan = resolve_run(spec, probes=False)
    try:
        plan.prepare_machine(role="plain")
        with Machine(plan.config) as m:
            t0 = time.monotonic()
            m.start()
            status = m.wait(1800)
            wall = time.monotonic() - t0
    finally:
        plan.close()
    if status != 0:
        raise RuntimeError(f"plain run of {spec.kernel} failed: status {status}")
    return wall


def plain_boot(image, system_map, workload, iterations):
    """Seconds of one plain boot-to-power-off of a kernel image (QEMU's life only, plain TCG)."""
    return plain_run(RunSpec(kernel=str(image), system_map=str(system_map) if system_map else None,
                             workload=workload, iterations=iterations, icount=False))


def cached_x86_64_kernel():
    """(vmlinuz, System.map) of Debian's amd64 kernel in the cache (scripts/fetch-debian-kernel.sh
    --flavour amd64), or None."""
    from gdbfault.base.locations import cache_dir
    maps = sorted((cache_dir() / "kernels").glob("debian-6.1.0-*-amd64/System.map"))
    return (maps[-1].parent / "vmlinuz", maps[-1]) if maps else None


def bench_x86_64(image, system_map, workload, abi, iterations, repeat):
    """The zero-stop backend on an x86_64 kernel against an uninstrumented run of the same guest
    (same boot, emulator, -cpu, memory, -icount shift=0), alternating; QEMU's wall and CPU
    seconds. Returns the median CPU ratio."""
    rows, walls, cpus = [], [], []
    spec = RunSpec(kernel=str(image), system_map=str(system_map), workload=workload, workload_abi=abi,
                   iterations=iterations, backend="plugin")
    for i in range(repeat):
        c0 = _child_cpu()
        plain = plain_run(spec)
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
    return statistics.median(cpus)


def bench_old_kernel(image, system_map, workload, iterations, repeat):
    """Image → report against one plain boot of the same image; returns the median ratio."""
    import time
    rows, ratios = [], []
    for i in range(repeat):
        plain = plain_boot(image, system_map, workload, iterations)
        t0 = time.monotonic()
        res = run_qemu(RunSpec(kernel=str(image), system_map=str(system_map), workload=workload,
                               iterations=iterations))
        full = time.monotonic() - t0
        ratios.append(full / plain)
        record, replay = res.record.wall_s, res.run.wall_s
        rows.append([i + 1, f"{plain:.2f}", f"{full:.2f}", f"{full / plain:.2f}", f"{record:.2f}",
                     f"{replay:.2f}", f"{full - record - replay:.2f}", res.run.hits,
                     "yes" if res.checks and res.checks_ok else "NO"])
    boot = res.kernel.boot
    print(f"\nold kernel: {image} ({boot['format']}, protocol {boot['boot_protocol']}, "
          f"{boot['boot_path']}, {res.kernel.profile} profile), {workload} × {iterations}; "
          f"gdbfault under -icount {boot['icount']}, replay from {res.mode.replay_start}; "
          f"the run: {res.run.exit}")
    print(tabulate(rows, headers=["run", "plain boot s", "image→report s", "ratio", "record s",
                                  "replay s", "rest s", "hits", "exact"]))
    print("record: boot + workload, recorded (one stop at the workload's entry when the replay starts "
          "there); replay: the counting replay under GDB; rest: set-up (GRUB image, initrd, GDB) and "
          "teardown")
    median = statistics.median(ratios)
    print(f"median ratio image→report / plain boot-to-power-off: {median:.2f} (target ≤ 1.0)")
    return median


def _child_cpu():
    """CPU seconds (user + system) of this process's waited-for children."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_profile(variant, workload, iterations, repeat):
    """The kernel-profile plugin vs no instrumentation, same guest, alternating.

    Both wall time and QEMU's CPU time (user + system, from the children's
    rusage: QEMU is the only child that does real work here) are shown; on a
    machine shared with other jobs the wall ratio swings widely, the CPU
    ratio much less, so the verdict uses the CPU ratio.
    """
    from gdbfault.kprofile.run import run_profile
    rows, walls, cpus = [], [], []
    for i in range(repeat):
        c0 = _child_cpu()
        plain = run_uninstrumented(variant, workload, iterations)
        c1 = _child_cpu()
        prof = run_profile(RunSpec(variant=variant, workload=workload, iterations=iterations, timeout_s=1800))
        c2 = _child_cpu()
        wall = prof["run"]["wall_s"]        # QEMU start to exit, plugin loaded
        plain_cpu, prof_cpu = c1 - c0, c2 - c1
        walls.append(wall / plain)
        cpus.append(prof_cpu / plain_cpu)
        acc = prof["accounting"]
        rows.append([i + 1, f"{plain:.2f}", f"{wall:.2f}", f"{wall / plain:.2f}",
                     f"{plain_cpu:.2f}", f"{prof_cpu:.2f}", f"{prof_cpu / plain_cpu:.2f}",
                     f"{prof['total']['kernel']:,}",
                     f"{acc['unexplained']:+,}" if acc["unexplained"] is not None else "-"])
    print(f"\nkernel profile (gdbfault profile): lab kernel ({variant}), {workload} × {iterations:,}, "
          "-icount shift=0, seconds of the QEMU process (boot included)")
    print(tabulate(rows, headers=["run", "plain wall", "profile wall", "ratio", "plain CPU", "profile CPU",
                                  "ratio", "kernel insns", "vs guest cycles"]))
    print(f"median ratio profile/uninstrumented: CPU {statistics.median(cpus):.2f} (target ≤ 1.5), "
          f"wall {statistics.median(walls):.2f} (shared machine: wall time swings with other jobs)")
    print("vs guest cycles: kernel + user − guest cycles − faulting blocks (0 = exact; +1 when a "
          "fault hits a block's last instruction)")
    return statistics.median(cpus)


def _private_cache(folder):
    """Point the recordings cache at `folder` (this process and its children); the old setting back."""
    import os
    old = os.environ.get("GDBFAULT_RECORDING_CACHE")
    os.environ["GDBFAULT_RECORDING_CACHE"] = str(folder)
    return old


def _restore_cache(old):
    import os
    if old is None:
        os.environ.pop("GDBFAULT_RECORDING_CACHE", None)
    else:
        os.environ["GDBFAULT_RECORDING_CACHE"] = old


def bench_second_run(image, system_map, workload, iterations, repeat, plain_tcg=False):
    """Record once, count many: a second identical run of a kernel image (it replays the recording the
    first one cached, from the workload's entry snapshot on an old kernel) against one plain boot of the
    same image under the run's own -icount options (and, with `plain_tcg`, a plain-TCG boot, the
    old-kernel part's baseline). Wall seconds, the whole of each run; a cache of its own. Returns the
    median ratio second run / plain boot (target ≤ 0.3)."""
    import tempfile
    import time
    rows, ratios = [], []
    spec = RunSpec(kernel=str(image), system_map=str(system_map) if system_map else None, workload=workload,
                   iterations=iterations)
    with tempfile.TemporaryDirectory(prefix="bench-recordings-") as folder:
        old = _private_cache(folder)
        try:
            for i in range(repeat):
                plain = plain_run(spec)
                t0 = time.monotonic()
                first = run_qemu(dataclasses.replace(spec, fresh_recording=True))
                t1 = time.monotonic()
                second = run_qemu(spec)
                t2 = time.monotonic()
                same = ([p.hits.workload for p in first.probes] == [p.hits.workload for p in second.probes]
                        and [p.cost_hist for p in first.paths] == [p.cost_hist for p in second.paths])
                ratios.append((t2 - t1) / plain)
                rows.append([i + 1, f"{plain:.2f}", f"{t1 - t0:.2f}", f"{t2 - t1:.2f}", f"{(t2 - t1) / plain:.2f}",
                             second.record.reused or "NO", second.mode.replay_start, "yes" if same else "NO"])
            tcg = plain_boot(image, system_map, workload, iterations) if plain_tcg else None
        finally:
            _restore_cache(old)
    boot = first.kernel.boot or {}
    print(f"\nsecond identical run: {image} ({boot.get('boot_path', 'lab')}, -icount {boot.get('icount', 'shift=0')}), "
          f"{workload} × {iterations}; a plain boot-to-power-off of the same image under the same -icount "
          "against gdbfault's first run (it records, then counts in the replay) and a second identical run "
          "(it replays the first one's cached recording)")
    print(tabulate(rows, headers=["run", "plain boot s", "first run s", "second run s", "second/plain",
                                  "replayed from", "replay starts at", "same counts and costs"]))
    median = statistics.median(ratios)
    second = statistics.median(float(r[3]) for r in rows)
    print(f"median ratio second run / plain boot: {median:.2f} (target ≤ 0.3)"
          + (f"; a plain-TCG boot (no -icount) took {tcg:.1f} s, the second run {second / tcg:.2f} of it"
             if tcg else ""))
    return median


def bench_open_fault(iterations, repeat, folder=None):
    """Opening the last fault of a long recording (`gdbfault inspect RUN --fault LAST`, all of it: the
    checks, the replay to the fault from the nearest keyframe, its call tree, GDB and the card) against
    replaying the same recording with no debugger (QEMU from its first instruction to the end).
    The run is recorded once (kept in `folder`, reused when it is there). Returns the median ratio."""
    import tempfile
    import time
    from gdbfault.inspect.fault import open_fault
    from gdbfault.inspect.replay import KeptRecording, Scratch
    from gdbfault.views.report import load_run, save_run
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as scratch_home:
        folder = Path(folder) if folder else Path(scratch_home)
        folder.mkdir(parents=True, exist_ok=True)
        run_file = folder / f"run-{iterations}.json"
        old = _private_cache("off")
        try:
            if not run_file.is_file():
                t0 = time.monotonic()
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
                         f"{opened / plain:.2f}", status,
                         f"{data['fault']['index']:,} ({data['fault']['cost']} insns)"])
    print(f"\nopening the last fault of a {iterations:,}-iteration recording (lab kernel, mprotect; kept: "
          f"{rec.size_bytes / 1e6:.1f} MB, {rec.keyframes} keyframes): gdbfault inspect --fault LAST "
          "against a replay of the same recording with no debugger, from its first instruction to its end")
    print(tabulate(rows, headers=["run", "plain replay s", "its CPU s", "inspect s", "its CPU s",
                                  "inspect/replay", "replay exit", "fault opened"]))
    median = statistics.median(ratios)
    print(f"median ratio inspect / plain replay: {median:.2f} (target ≤ 1.0)")
    return median


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
    import time
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


def soak(runs=100, iterations=20, kill_iterations=2000, variant="vanilla"):
    """Consecutive short runs, mixed with stopped and killed ones; 0 leaks expected. Exit 0/1."""
    import collections
    import os
    import shutil
    import tempfile
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
        time.sleep(1.0)
        parts = _soak_parts(tag)
        fds_after = me.num_fds()
        entries = sorted(p.name for p in private.iterdir())
        new_fallback = sorted(str(p) for p in set(Path("/tmp").glob("gdbfault-*")) - fallback)
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
    print(tabulate([["QEMU/GDB processes left", len(parts)],
                    ["file descriptors of this process, before → after", f"{fds_before} → {fds_after}"],
                    ["entries left in the private TMPDIR", len(entries)],
                    ["gdbfault-* entries left in /tmp", len(new_fallback)],
                    ["runs with an unexpected exit code", len(wrong)]],
                   headers=["leak check", "value"]))
    for line in wrong[:10]:
        print("  " + line)
    leaked = parts or fds_after > fds_before or entries or new_fallback or wrong
    print("soak: " + ("LEAKS OR WRONG EXIT CODES (see above)" if leaked else "0 leaks, every exit code as documented"))
    return 1 if leaked else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variant", default="vanilla")
    ap.add_argument("--workload", default="mprotect")
    ap.add_argument("--no-icount", dest="icount", action="store_false")
    ap.add_argument("--part", choices=("anchor", "plugin", "profile", "old-kernel", "x86_64", "second-run", "inspect",
                                       "soak", "all"),
                    default="all", help="anchor: GDB throughput; plugin: zero-stop backend; profile: kernel "
                    "profile overhead; old-kernel: image to report vs a plain boot; x86_64: the zero-stop "
                    "backend on an x86_64 kernel; soak: reliability; all: each")
    ap.add_argument("--plugin-iterations", type=int, default=100000)
    ap.add_argument("--profile-iterations", type=int, default=1000000)
    ap.add_argument("--image", help="old-kernel part: a kernel image (default: the oldboot fixture)")
    ap.add_argument("--system-map", help="old-kernel part: the image's System.map")
    ap.add_argument("--old-iterations", type=int, default=50,
                    help="old-kernel part: workload iterations (default 50: the boot is what is timed)")
    ap.add_argument("--x86-image", help="x86_64 part: an x86_64 kernel image (default: Debian's amd64 kernel "
                                        "in the cache, from scripts/fetch-debian-kernel.sh --flavour amd64)")
    ap.add_argument("--x86-system-map", help="x86_64 part: the image's System.map")
    ap.add_argument("--x86-iterations", type=int, default=200000)
    ap.add_argument("--workload-abi", choices=("i386", "x86_64"), default="x86_64",
                    help="x86_64 part: the workload's ABI (default: native x86_64)")
    ap.add_argument("--soak-runs", type=int, default=100)
    ap.add_argument("--inspect-iterations", type=int, default=100000,
                    help="inspect part: the recording whose last fault is opened (default 100,000 iterations)")
    ap.add_argument("--inspect-folder", help="inspect part: keep (and reuse) its recording there")
    ap.add_argument("--plain-tcg", action="store_true",
                    help="second-run part: also time a plain-TCG boot (no -icount) of each image")
    ap.add_argument("--count-only", action="store_true",
                    help="skip the path-tracing runs of the anchor part")
    ap.add_argument("--anchor", metavar="PATH",
                    help="bare_gdb_count.py (default: ../shared/anchors/ beside the checkout)")
    a = ap.parse_args(argv)
    if a.part == "soak":
        return soak(a.soak_runs, variant=a.variant)
    if a.part in ("old-kernel", "all"):
        image = a.image or REPO / "qemu" / "kernel" / "build" / "oldboot" / "bzImage"
        system_map = a.system_map or (None if a.image else image.parent / "System.map")
        bench_old_kernel(image, system_map, a.workload, a.old_iterations, a.repeat)
        if a.part == "old-kernel":
            return 0
    if a.part in ("second-run", "all"):
        images = [Path(a.image)] if a.image else [REPO / "qemu" / "kernel" / "build" / v / "bzImage"
                                                  for v in ("oldboot-24", "oldboot")]
        for image in images:
            system_map = a.system_map or (None if a.image else image.parent / "System.map")
            bench_second_run(image, system_map, a.workload, a.old_iterations, a.repeat, a.plain_tcg)
        if a.part == "second-run":
            return 0
    if a.part in ("inspect", "all"):
        from gdbfault.machine.plugins import PluginUnavailable, plugin_library
        try:
            plugin_library("kprofile")
            bench_open_fault(a.inspect_iterations, a.repeat, a.inspect_folder)
        except PluginUnavailable as exc:
            print(f"inspect: skipped ({exc})")
        if a.part == "inspect":
            return 0
    if a.part in ("x86_64", "all"):
        kernel = (a.x86_image, a.x86_system_map) if a.x86_image else cached_x86_64_kernel()
        if kernel is None:
            print("x86_64: skipped (no x86_64 kernel: give --x86-image/--x86-system-map, or fetch one with "
                  "scripts/fetch-debian-kernel.sh --flavour amd64)")
        else:
            from gdbfault.machine.plugins import PluginUnavailable, plugin_library
            try:
                plugin_library("faultcount")
                bench_x86_64(*kernel, a.workload, a.workload_abi, a.x86_iterations, max(a.repeat, 3))
            except PluginUnavailable as exc:
                print(f"x86_64: skipped ({exc})")
        if a.part == "x86_64":
            return 0
    if a.part in ("profile", "all"):
        from gdbfault.machine.plugins import PluginUnavailable, plugin_library
        try:
            plugin_library("kprofile")
            bench_profile(a.variant, a.workload, a.profile_iterations, a.repeat)
        except PluginUnavailable as exc:
            print(f"kernel profile: skipped ({exc})")
        if a.part == "profile":
            return 0
    if a.part in ("plugin", "all"):
        from gdbfault.machine.plugins import PluginUnavailable, plugin_library
        try:
            plugin_library("faultcount")
            bench_plugin(a.variant, a.workload, a.plugin_iterations, a.iterations, a.repeat, a.icount)
        except PluginUnavailable as exc:
            print(f"zero-stop backend: skipped ({exc})")
        if a.part == "plugin":
            return 0
    script = anchor_script(a.anchor)
    if script is None:
        print(f"bench: anchor script {a.anchor or '../shared/anchors/bare_gdb_count.py'} not found "
              "(give it with --anchor PATH)", file=sys.stderr)
        if a.part == "all":
            soak(a.soak_runs, variant=a.variant)
        return 2
    rows = []
    modes = ("count",) if a.count_only else ("count", "trace")
    ratios = {(m, unit): [] for m in modes for unit in ("wall", "cpu")}
    exact = True
    for i in range(a.repeat):
        # Alternate them so machine noise hits them alike; ratios are taken per round.
        an = run_anchor(a.variant, a.workload, a.iterations, a.icount, script)
        row = [i + 1, an["hits"], an["hits_per_s"], an["hits_per_cpu_s"]]
        for mode in modes:
            got = run_gdbfault(a.variant, a.workload, a.iterations, a.icount, trace=mode == "trace")
            exact = exact and got["checks_ok"] and got["hits"] == an["hits"]
            wall, cpu = got["hits_per_s"] / an["hits_per_s"], got["hits_per_cpu_s"] / an["hits_per_cpu_s"]
            ratios[mode, "wall"].append(wall)
            ratios[mode, "cpu"].append(cpu)
            row += [got["hits"], got["hits_per_s"], f"{wall:.2f}", got["hits_per_cpu_s"], f"{cpu:.2f}"]
        rows.append(row)
    print(f"lab kernel ({a.variant}), workload {a.workload} × {a.iterations}, "
          f"probes {', '.join(SYMBOLS)}, {'-icount shift=0' if a.icount else 'plain TCG'}")
    headers = ["run", "anchor hits", "hits/s", "hits/CPU s"]
    for mode in modes:
        headers += [f"{mode} hits", "hits/s", "ratio", "hits/CPU s", "CPU ratio"]
    print(tabulate(rows, headers=headers))
    print(f"counts exact (equal to the anchor's and to the guest's own summary): {'yes' if exact else 'NO'}")
    for mode, what in (("count", "counting only (--no-trace)"),
                       ("trace", "counting + path tracing (default; adds a stop at each fault's return)")):
        if mode in modes:
            print(f"median ratio gdbfault/anchor, {what}: "
                  f"{statistics.median(ratios[mode, 'wall']):.2f} by hits/s, "
                  f"{statistics.median(ratios[mode, 'cpu']):.2f} by hits per CPU second"
                  + (" (≥ 1.0: no per-hit cost over bare GDB)" if mode == "count" else ""))
    print("gdbfault counts in a replay of a recording (zero observer effect); the anchor counts live.")
    return soak(a.soak_runs, variant=a.variant) if a.part == "all" else 0


if __name__ == "__main__":
    sys.exit(main())
