"""`make bench`: gdbfault's counting throughput against bare GDB.

Runs ../shared/anchors/bare_gdb_count.py (plain `gdb -batch` with counting
breakpoints, the fastest stock GDB offers) and `gdbfault attach --qemu` on the
same lab kernel, workload and probes, alternating them, and prints hits/s and
the ratio gdbfault/anchor (1.0 = no per-hit cost added over bare GDB).
Timings are wall clock on a shared machine: trust the ratio, not the seconds.
Each run's CPU seconds (QEMU, GDB and our own Python, all of them) are
measured too: on a loaded machine hits per CPU second is the steadier figure.

    python -m gdbfault.bench [--iterations N] [--repeat K] [--variant V] [--workload W]
                             [--part anchor|plugin|all] [--plugin-iterations N] [--anchor PATH]
                             [--count-only]

The plugin part runs the zero-stop backend against an uninstrumented run of
the same guest (100,000 iterations by default) and puts the GDB backend's
time beside it.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from gdbfault.locations import REPO, lab_kernel, workload_binary
from gdbfault.run import RunSpec, run_qemu

__all__ = ["anchor_script", "run_anchor", "run_gdbfault", "main"]

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
    r = res["run"]
    return {"hits": r["hits"], "wall_s": r["wall_s"], "hits_per_s": r["hits_per_s"],
            "hits_per_cpu_s": round(r["hits"] / cpu, 1),
            "checks_ok": all(c["ok"] for c in res["checks"])}


def run_uninstrumented(variant, workload, iterations, icount=True):
    """Wall time of the same guest with nothing attached (icount like the others, or not)."""
    import time
    from gdbfault.qemu import Machine, MachineConfig
    kernel, _ = lab_kernel(variant)
    with Machine(MachineConfig(kernel=kernel, initrd=[workload_binary(workload)],
                               append=f"iterations={iterations}", icount=icount,
                               halted=False)) as m:
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
        plugin = res["run"]["wall_s"]       # QEMU start to exit, plugin loaded
        ratios.append(plugin / plain)
        rows.append([i + 1, f"{plain:.2f}", f"{plugin:.2f}", f"{plugin / plain:.2f}", res["run"]["hits"],
                     "yes" if all(c["ok"] for c in res["checks"]) else "NO"])
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
          f"({gdb['run']['hits_per_s']:.0f} hits/s); at {iterations} iterations that is about "
          f"{per_iter * iterations:.0f} s, {per_iter * iterations / statistics.median([float(r[2]) for r in rows]):.0f}× "
          "the plugin")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variant", default="vanilla")
    ap.add_argument("--workload", default="mprotect")
    ap.add_argument("--no-icount", dest="icount", action="store_false")
    ap.add_argument("--part", choices=("anchor", "plugin", "all"), default="all")
    ap.add_argument("--plugin-iterations", type=int, default=100000)
    ap.add_argument("--count-only", action="store_true",
                    help="skip the path-tracing runs of the anchor part")
    ap.add_argument("--anchor", metavar="PATH",
                    help="bare_gdb_count.py (default: ../shared/anchors/ beside the checkout)")
    a = ap.parse_args(argv)
    if a.part in ("plugin", "all"):
        from gdbfault.plugin_backend import PluginUnavailable, plugin_library
        try:
            plugin_library()
            bench_plugin(a.variant, a.workload, a.plugin_iterations, a.iterations, a.repeat, a.icount)
        except PluginUnavailable as exc:
            print(f"zero-stop backend: skipped ({exc})")
        if a.part == "plugin":
            return 0
    script = anchor_script(a.anchor)
    if script is None:
        print(f"bench: anchor script {a.anchor or '../shared/anchors/bare_gdb_count.py'} not found "
              "(give it with --anchor PATH)", file=sys.stderr)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
