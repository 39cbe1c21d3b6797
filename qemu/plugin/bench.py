#!/usr/bin/env python3
"""Benchmark gdbfault's TCG plugin: wall time of a lab-kernel workload run
under plain TCG, uninstrumented vs with the faultcount plugin and the
default fault-path probes.

Usage (from the repository root):
  python3 qemu/plugin/bench.py [--iterations 100000] [--variant vanilla]
                               [--workload mprotect] [--repeat 1]
                               [--gdb-iterations N] [--icount]

Prints one line per run and a summary with the ratio plugin/plain (target
<= 1.3). The plugin's counts are checked against the guest's own
GDBFAULT-RESULT line. With --gdb-iterations N it also times the bare-GDB
anchor (../shared/anchors/bare_gdb_count.py, in-GDB counting breakpoints on
the same probes) at N iterations, for the figure beside GDB's.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gdbfault import plugin_backend as pb  # noqa: E402


def run_qemu(kernel, workload, iterations, extra, workdir, icount=False, timeout=1800):
    """Run one guest to its end; return (wall seconds, exit code, GDBFAULT-RESULT dict)."""
    serial = Path(workdir) / "serial.log"
    cmd = ["qemu-system-i386", "-m", "64", "-nodefaults", "-display", "none",
           "-no-reboot", "-kernel", str(kernel), "-initrd", str(workload),
           "-append", f"iterations={iterations}", "-serial", f"file:{serial}",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    if icount:
        cmd += ["-icount", "shift=0"]
    cmd += extra
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    text = serial.read_text(errors="replace") if serial.exists() else ""
    match = re.search(r"^GDBFAULT-RESULT (\{.*\})\s*$", text, re.M)
    if not match:
        raise SystemExit(f"no GDBFAULT-RESULT (qemu exit {proc.returncode}): "
                         f"{proc.stderr.strip()} {text[-500:]}")
    return wall, proc.returncode, json.loads(match.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--variant", default="vanilla", choices=("vanilla", "patched"))
    ap.add_argument("--workload", default="mprotect")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--icount", action="store_true", help="run under -icount shift=0")
    ap.add_argument("--gdb-iterations", type=int, default=0,
                    help="also time the bare-GDB anchor at this many iterations")
    args = ap.parse_args()

    build = REPO / "qemu" / "kernel" / "build" / args.variant
    kernel, smap = build / "kernel.elf", build / "System.map"
    workload = REPO / "qemu" / "workloads" / "build" / f"{args.workload}.elf"
    lib = pb.plugin_library()
    probes = pb.lab_fault_probes(kernel, smap)
    names = [name for _, kind, name in probes if kind in ("entry", "event")]

    plain, plugged = [], []
    with tempfile.TemporaryDirectory(prefix="fcbench.") as tmp:
        probe_file, out = Path(tmp) / "probes.txt", Path(tmp) / "out.json"
        pb.write_probe_file(probe_file, probes)
        for r in range(args.repeat):
            wall, rc, res = run_qemu(kernel, workload, args.iterations, [], tmp, args.icount)
            plain.append(wall)
            print(f"plain   run {r}: {wall:7.2f} s  cycles/iter {res['cycles_per_iteration']}")
            wall, rc, res2 = run_qemu(kernel, workload, args.iterations,
                                      pb.qemu_plugin_args(lib, probe_file, out), tmp,
                                      args.icount)
            plugged.append(wall)
            data = pb.read_plugin_result(out)
            hits = {n: data["hits"][n]["boot"] + data["hits"][n]["workload"] for n in names}
            print(f"plugin  run {r}: {wall:7.2f} s  cycles/iter "
                  f"{res2['cycles_per_iteration']}  hits {hits}")
            for p in data["paths"]:
                print(f"          path {p['entry']} -> {p['events']}: "
                      f"{sum(p['cost_hist'].values())} x cost {p['cost_hist']}")
    best_plain, best_plugin = min(plain), min(plugged)
    print(f"SUMMARY {args.workload} x{args.iterations} ({args.variant}, "
          f"{'icount' if args.icount else 'plain TCG'}): uninstrumented "
          f"{best_plain:.2f} s, plugin {best_plugin:.2f} s, ratio "
          f"{best_plugin / best_plain:.3f} (target <= 1.3)")

    if args.gdb_iterations:
        anchor = REPO.parent / "shared" / "anchors" / "bare_gdb_count.py"
        if not anchor.exists():
            anchor = Path("/work/shared/anchors/bare_gdb_count.py")
        cmd = [sys.executable, str(anchor), "--kernel", str(kernel), "--initrd",
               str(workload), "--append", f"iterations={args.gdb_iterations}",
               "--symbols", ",".join(names)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  timeout=600)
        except subprocess.TimeoutExpired:
            print(f"GDB anchor x{args.gdb_iterations}: did not finish within 600 s")
            return
        try:
            g = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            print(f"GDB anchor failed: {proc.stderr.strip()[-400:]}")
            return
        print(f"GDB anchor x{args.gdb_iterations}: {json.dumps(g)}")
        per_iter = g.get("wall_s", g.get("seconds", 0)) / max(args.gdb_iterations, 1)
        if per_iter:
            print(f"SUMMARY-GDB in-GDB counting: {per_iter * 1e3:.3f} ms/iteration, "
                  f"~{per_iter * args.iterations:.0f} s extrapolated to x{args.iterations} "
                  f"(plugin {best_plugin:.2f} s)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
