#!/usr/bin/env python3
"""A fixed set of gdbfault commands, run and saved, and a field-by-field diff of two such sets.

A change that should not change behaviour (a restructuring) is checked by
running the same commands before and after it and comparing what they
saved: every JSON field, the exit codes and the tables, with timings and
other figures that differ from run to run left out.

    python3 scripts/behaviour_snapshot.py run OUTDIR        # about 3 minutes
    python3 scripts/behaviour_snapshot.py diff BEFORE AFTER # exit 1 on a difference
"""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLDBOOT = REPO / "qemu" / "kernel" / "build" / "oldboot"
SEED_PATCH = REPO / "qemu" / "kernel" / "patches" / "0001-user-faults-skip-exception-table.patch"

# name -> the command's arguments after `gdbfault` ({out} is the JSON file it writes)
COMMANDS = {
    "attach-gdb": ["attach", "--qemu", "--iterations", "200", "-q", "-o", "{out}"],
    "attach-plugin": ["attach", "--qemu", "--backend", "plugin", "--iterations", "200", "-q", "-o", "{out}"],
    "attach-patched-mixed": ["attach", "--qemu", "--variant", "patched", "--workload", "mixed",
                             "--iterations", "100", "-q", "-o", "{out}"],
    "live-patch": ["attach", "--qemu", "--iterations", "200", "--live-patch", str(SEED_PATCH),
                   "--patch-at", "100", "-q", "-o", "{out}"],
    "old-kernel": ["attach", "--qemu", "--kernel", str(OLDBOOT / "bzImage"), "--system-map",
                   str(OLDBOOT / "System.map"), "--iterations", "50", "-q", "-o", "{out}"],
    "compare": ["compare", "--iterations", "200", "--format", "json", "-o", "{out}"],
    "check": ["check", str(REPO / "qemu" / "checks" / "seed-patch.toml"), "--format", "json"],
    "profile": ["profile", "--qemu", "--iterations", "200", "-o", "{out}"],
    "report-csv": ["report", "{attach-gdb}", "--format", "csv"],
    "bad-iterations": ["attach", "--qemu", "--iterations", "0"],
    "bad-symbol": ["attach", "--qemu", "--probe", "x=no_such_symbol"],
}

# Keys whose values differ from run to run (wall time, speed, host-clock effects) or name the run's files.
VOLATILE = {"wall_s", "hits_per_s", "stop_s", "gdb_wall_s", "timing", "path", "source", "real", "user", "sys",
            "real_s", "user_s", "sys_s", "time_s"}
# ... and, per command, what moves with the host's clock: a live patch's stop in the recording
# shifts the guest's instruction counts, and the boot's length before the profiled loop varies.
# The plugin counts a live guest (its idle boot follows the host clock); an old kernel's recording
# may power off by itself before gdbfault ends it at the result line (a race the report names).
VOLATILE_IN = {"live-patch": {"icount", "icount_marks", "consistency", "cycles", "cycles_per_iteration"},
               "profile": {"boot"}, "attach-plugin": {"insns_total"}, "old-kernel": {"exit"}}
_TABLE_VOLATILE = re.compile(r"(\d+(\.\d+)? s wall|[\d.]+ hits/s|written to \S+|saved to \S+|"
                             r"/[\w/.-]+|\d+(\.\d+)? s\b)")


def run_all(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, args in COMMANDS.items():
        out = out_dir / f"{name}.json"
        argv = [a.format(out=out, **{k: v for k, v in files.items()}) for a in args]
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "gdbfault"] + argv, capture_output=True, text=True,
                              cwd=REPO, timeout=900)
        files[name] = str(out)
        (out_dir / f"{name}.stdout").write_text(done.stdout)
        (out_dir / f"{name}.meta").write_text(json.dumps(
            {"exit": done.returncode, "stderr": done.stderr.strip().splitlines()[-1:] if done.stderr else []}))
        if name == "check":
            out.write_text(done.stdout)
        print(f"{name:22s} exit {done.returncode}  {time.monotonic() - t0:5.1f} s", flush=True)


def _walk(a, b, where, diffs, volatile=VOLATILE):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in volatile:
                continue
            if key not in a or key not in b:
                diffs.append(f"{where}.{key}: only in {'after' if key in b else 'before'}")
                continue
            _walk(a[key], b[key], f"{where}.{key}", diffs, volatile)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{where}: {len(a)} items before, {len(b)} after")
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{where}[{i}]", diffs, volatile)
    elif a != b:
        diffs.append(f"{where}: {a!r} before, {b!r} after")


def _json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def diff(before, after):
    before, after = Path(before), Path(after)
    total = 0
    for name in COMMANDS:
        diffs = []
        _walk(json.loads((before / f"{name}.meta").read_text()), json.loads((after / f"{name}.meta").read_text()),
              "exit", diffs)
        _walk(_json(before / f"{name}.json"), _json(after / f"{name}.json"), "json", diffs,
              VOLATILE | VOLATILE_IN.get(name, set()))
        a, b = ((d / f"{name}.stdout").read_text() for d in (before, after))
        if not (a.lstrip().startswith("{") or name == "report-csv" or name in VOLATILE_IN):
            a, b = (_TABLE_VOLATILE.sub("…", t) for t in (a, b))
            if a != b:
                diffs.append("table text differs")
        print(f"{name:22s} {'same' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:20]:
            print(f"    {d}")
        total += len(diffs)
    return 1 if total else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run_all(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        sys.exit(diff(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
