"""Render a RunResult: a readable table by default, JSON/CSV/markdown for machines.

The RunResult and its JSON schema ("gdbfault.run/1") are described in
model/result.py. JSON output is `RunResult.to_dict()`; CSV is one row per probe with
the columns in CSV_FIELDS. `save_run`/`load_run` write and read run files.
"""
import csv
import io
import json
from pathlib import Path

from tabulate import tabulate

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.userfiles import check_output_file, read_input_text
from gdbfault.model.paths import shape_alias
from gdbfault.model.result import REQUIRED_KEYS, Kernel, RunResult, as_result, json_default

__all__ = ["render", "load_run", "save_run", "save_json", "check_writable", "kernel_label", "machine_line",
           "emulator_text", "abi_note", "recording_lines", "outlier_lines", "size_text", "FORMATS", "CSV_FIELDS",
           "REQUIRED_KEYS"]

FORMATS = ("table", "json", "csv", "markdown")
CSV_FIELDS = ("kernel", "variant", "workload", "iterations", "role", "symbol", "address",
              "hits_boot", "hits_workload", "hits_total", "per_iteration", "duplicates",
              "expected", "match")


def check_writable(path, option="--output"):
    """Fail before any run when `path` cannot be written (a directory, a missing
    or read-only folder): one line, exit 2 (base/userfiles.check_output_file)."""
    check_output_file(path, option)


def save_json(data, path):
    """Write JSON atomically (a temporary file renamed over it); never leaves the temporary."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, RunResult):
        data = data.to_dict()
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=json_default) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GdbfaultError(f"cannot write {path}: {exc.strerror or exc}") from None


def save_run(result, path):
    """Write a RunResult (or its JSON dict) to a run file."""
    save_json(as_result(result).to_dict(), path)


def load_run(path):
    """A saved run as a RunResult; one-line GdbfaultError when it is not one (or is no bounded file)."""
    text = read_input_text(path, "run")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GdbfaultError(f"{path} is not a gdbfault run (invalid JSON: {exc})") from None
    return RunResult.from_dict(data, path)


def render(result, fmt="table"):
    """A RunResult (or its JSON dict) as text in format `fmt` (FORMATS)."""
    result = as_result(result)
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=1) + "\n"
    if fmt == "csv":
        return _csv(result)
    if fmt in ("table", "markdown"):
        return _text(result, "github" if fmt == "markdown" else "simple")
    raise GdbfaultError(f"unknown format '{fmt}'", f"choose one of: {', '.join(FORMATS)}")


def kernel_label(result):
    """How reports name a run's kernel: "lab kernel (VARIANT)" or the file's name."""
    if isinstance(result, RunResult):
        return result.kernel.label()
    return Kernel.from_dict(result["kernel"]).label()      # a bare dict (compare's tests build some)


def _csv(result):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    checks = {c.role: c for c in result.whole_run_checks()}
    for p in result.probes:
        c = checks.get(p.role)
        w.writerow({"kernel": result.kernel.path, "variant": result.kernel.variant or "",
                    "workload": result.workload.name or "",
                    "iterations": result.iterations,
                    "role": p.role, "symbol": p.symbol, "address": f"{p.address:#x}",
                    "hits_boot": p.hits.boot, "hits_workload": p.hits.workload,
                    "hits_total": p.total, "per_iteration": p.per_iteration,
                    "duplicates": p.duplicates,
                    "expected": c.expected if c else "", "match": ("yes" if c.ok else "no") if c else ""})
    return out.getvalue()


def _seconds(ticks, hz):
    return f"{ticks / hz:.2f} s" if hz else f"{ticks} ticks"


def _num(v):
    return f"{v:,}" if isinstance(v, int) else ("-" if v is None else str(v))


def _live_patch_lines(lp, tablefmt):
    """The live patch's line, and hits and paths before/after it in two columns."""
    lines = []
    funcs = ", ".join(f"{f['name']} → {f['new']:#x}" for f in lp.functions)
    when = (f"at iteration {lp.at_iteration} (guest instruction {_num(lp.icount)})"
            if lp.at_iteration is not None else "at once on attaching")
    lines.append(f"live patch: {funcs} ({lp.code['bytes']} bytes at {lp.code['address']:#x}), {when}"
                 + ("" if lp.applied else f" — NOT APPLIED: {lp.error}"))
    if lp.at_iteration is None and lp.applied:
        lines.append("the old entries were put back on detaching" if lp.unpatched else
                     "the kernel was left patched (--keep-patch)")
    if lp.unpatch_at_iteration is not None:
        lines.append(f"unpatched: the old entries put back at iteration {lp.unpatch_at_iteration} "
                     f"(guest instruction {_num(lp.unpatch_icount)})")
    if lp.before is None:
        return lines + [""]
    titles = {"before": "before patch", "after": "after patch", "after_unpatch": "after unpatch"}
    phases = lp.phases()
    rows = [["iterations"] + [x for _, ph in phases for x in (_num(ph.iterations), "")]]
    for sym in lp.before.hits:
        def per(phase):
            v = phase.per_iteration.get(sym)
            return f"{v:.2f}" if v is not None else "-"
        rows.append([sym] + [x for _, ph in phases for x in (ph.hits[sym], per(ph))])
    headers = [""] + [x for name, _ in phases for x in (titles[name], "per iteration")]
    lines.append(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                          colalign=("left",) + ("right",) * (len(headers) - 1)))
    if all(ph.paths is not None for _, ph in phases):
        shapes = list(dict.fromkeys(p.shape for _, ph in phases for p in ph.paths))
        by = {(name, p.shape): p for name, ph in phases for p in ph.paths}
        prow = []
        for shape in shapes:
            row = [shape]
            for name, _ in phases:
                p = by.get((name, shape))
                row += [p.count, _num(p.median), _num(p.p95)] if p else [0, "-", "-"]
            prow.append(row)
        short = {"before": "before", "after": "after", "after_unpatch": "after unpatch"}
        headers = ["path"] + [x for name, _ in phases for x in (f"{short[name]}: count", "median", "p95")]
        lines.append("")
        lines.append(tabulate(prow, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                              colalign=("left",) + ("right",) * (len(headers) - 1)))
        lines.append("(after the patch every call of a replaced function also runs the 5-byte jmp at its "
                     "old entry: one guest instruction)")
    bad = [c for _, ph in phases for c in ph.checks or [] if not c.ok]
    checked = sum(len(ph.checks or []) for _, ph in phases)
    if checked:
        lines.append(f"{', '.join(titles[n] for n, _ in phases)}: the counts match the guest's truth ✓"
                     if not bad else
                     "✗ " + "; ".join(f"{c.symbol}: counted {c.counted}, expected {c.expected}"
                                      for c in bad))
    c = lp.consistency
    if c:
        lines.append(f"record and replay agree: {_num(c['replay_icount_at_end'])} guest instructions at the "
                     f"workload's end in both (patch stop: {_num(c['record_icount_at_patch'])} recording, "
                     f"{_num(c['replay_icount_at_patch'])} replay, as QEMU counts them)")
    t = lp.timing
    if not t and lp.stop_s is not None:
        lines.append(f"guest timing: the patch stop ({lp.stop_s * 1e3:.1f} ms in GDB) moved the live guest's "
                     "clock by an amount not measured on this backend; it is in cycles/iteration above")
    if t:
        stops = "the patch stops" if lp.unpatch_at_iteration is not None else "the patch stop"
        took = f"; the stop took {t['stop_s'] * 1e3:.1f} ms in GDB" if t.get("stop_s") is not None else ""
        lines.append(f"guest timing: the workload's loop executed {_num(t['instructions'])} instructions and "
                     f"its rdtsc counted {_num(t['guest_cycles'])} cycles: {stops} moved the guest's clock by "
                     f"{_num(t['extra_cycles'])} cycles ({t['extra_cycles'] / 1e6:.3f} ms of guest time{took}), "
                     "included in cycles/iteration above")
    lines.append("")
    return lines


def machine_line(result):
    """What ran it, as a report's first line opens: the kernel, its architecture, the emulator,
    its version, accelerator, CPU model and icount ("vmlinuz · x86_64 · qemu-system-x86_64
    7.2.22 TCG -cpu qemu64, -icount shift=0"). Runs saved before gdbfault noted the
    architecture ran i386 kernels on qemu-system-i386 with its default CPU."""
    result = as_result(result)
    return f"{result.kernel.label()} · {emulator_text(result)}"


def emulator_text(result):
    """machine_line without the kernel's name: "x86_64 · qemu-system-x86_64 7.2.22 TCG -cpu qemu64, ..."."""
    result = as_result(result)
    t, mode, k = result.tool, result.mode, result.kernel
    shift = mode.icount_shift or 0
    icount = f", -icount shift={shift}" if mode.icount else ""
    accel = str(mode.accel or "tcg").upper() if mode.accel != "unknown" else "(accel unknown)"
    arch = f"{k.arch} · " if k.arch else ""
    cpu = f" -cpu {mode.cpu}" if mode.cpu else ""
    return f"{arch}{t.emulator_name()} {t.qemu} {accel}{cpu}{icount}"


def abi_note(workload):
    """How the workload ran, when the kernel could run it two ways: "i386 binary under the
    kernel's IA32 emulation" or "native x86_64 binary"; None on an i386 kernel."""
    if workload.ia32_emulation:
        return "i386 binary under the kernel's IA32 emulation"
    if workload.abi == "x86_64":
        return "native x86_64 binary"
    return None


def ran_count(result):
    """The iterations the guest itself said it ran (None when it did not say)."""
    return (result.guest or {}).get("iterations") if isinstance(result.guest, dict) else None


def _text(result, tablefmt):
    lines = []
    t, mode, k, w = result.tool, result.mode, result.kernel, result.workload
    shift = mode.icount_shift or 0
    gdb = f" · gdb {t.gdb}" if t.gdb else ""
    lines.append(f"{machine_line(result)}{gdb} · probes: {k.profile} profile · backend: {mode.backend}")
    if k.profile_reason and not k.lab:
        lines.append(f"profile {k.profile}: {k.profile_reason}"
                     + (f" · banner: {k.banner_form}" if k.banner_form else ""))
    if (k.boot or {}).get("boot_path") == "pvh":
        lines.append(f"boot: {k.boot['boot_reason']}")
    for note in k.profile_notes or []:
        lines.append(f"note: {note}")
    if w.attached_to and not w.name:     # a QEMU gdbfault did not start
        lines.append(f"attached to the running QEMU at {w.attached_to}"
                     + (f" (pid {w.qemu_pid})" if w.qemu_pid else "")
                     + (f"  (kernel command line: {w.command_line})" if w.command_line else ""))
    else:
        ran = ran_count(result)
        count = (f" × {ran}" + (f" (the guest's own count; {w.iterations} asked)" if w.iterations
                                and ran != w.iterations else "")) if ran else \
            (f" × {w.iterations}" if w.iterations else "")
        lines.append(f"workload {w.name}{count}"
                     + (f", {abi_note(w)}" if abi_note(w) else "")
                     + (f"  (kernel command line: {w.command_line})" if w.command_line else ""))
    partial = not result.run.complete and not ran_count(result)
    if partial and w.iterations:
        lines.append(f"partial run: the guest never said how many of the {w.iterations} iterations it ran, "
                     "so there are no per-iteration figures")
    lines.append("")

    show_boot = any(p.hits.boot for p in result.probes)
    headers = ["role", "symbol", "address"] + (["boot hits"] if show_boot else []) + ["hits", "per iteration"]
    rows = []
    for p in result.probes:
        per = p.per_iteration if not partial else None
        rows.append([p.role, p.symbol, f"{p.address:#010x}"]
                    + ([p.hits.boot] if show_boot else [])
                    + [p.hits.workload, f"{per:.2f}" if per is not None else "-"])
    lines.append(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                          colalign=("left", "left", "left") + ("right",) * (len(headers) - 3)))
    lines.append("")

    g = result.guest
    if g:
        hz = g.get("ticks_per_s") or 0
        parts = [f"iterations {g.get('iterations')}", f"SIGSEGV {g.get('sigsegv')}"]
        if g.get("efault"):
            parts.append(f"EFAULT {g['efault']}")
        if g.get("demand_pages"):
            parts.append(f"pages {g['demand_pages']}" + ("" if g.get("zero_ok", True) else " (NOT ZERO)"))
        parts.append(f"cycles/iteration {g.get('cycles_per_iteration')}")
        if hz and not g.get("real_ticks"):
            parts.append(f"real/user/sys under one {1000 // hz} ms tick")
        else:
            parts.append(f"real {_seconds(g.get('real_ticks', 0), hz)}  user {_seconds(g.get('user_ticks', 0), hz)}"
                         f"  sys {_seconds(g.get('sys_ticks', 0), hz)}")
        lines.append("guest says: " + " · ".join(parts))
        if mode.icount and shift:
            lines.append(f"(under -icount shift={shift} one guest instruction is {2 ** shift} ns of guest "
                         f"time and {2 ** shift} rdtsc cycles; path costs below are in instructions)")
        elif mode.icount:
            lines.append("(under -icount shift=0 one guest instruction is one cycle, 1 ns of guest time)")
    else:
        lines.append("guest says: nothing (no GDBFAULT-RESULT line)"
                     + ("; your workload's counts are not checked" if w.own else ""))

    checks = result.checks
    run = result.run
    dups = run.duplicates or 0
    if checks:
        bad = result.failed_checks
        if not bad:
            whole = result.whole_run_checks()
            phased = " and in each phase of the live patch" if len(whole) < len(checks) else ""
            # A replay never reports a stop twice, so gdbfault runs no filter there.
            filtered = ("counted in a replay: no duplicate stop reports to filter"
                        if run.duplicate_filter is False
                        else "counted by the plugin: the guest never stopped" if mode.backend == "plugin"
                        else f"duplicate stop reports filtered: {dups}")
            probes = f"{len(whole)} probe{'' if len(whole) == 1 else 's'}"
            lines.append(f"counts match the guest's own summary ✓ ({probes} checked{phased}; "
                         f"{filtered})")
        else:
            others = {p.role: p.alternatives or [] for p in result.probes}
            for c in bad:
                hint = ""
                if c.counted == 0 and others.get(c.role):
                    names = others[c.role]
                    hint = (f" — this kernel also has {', '.join(names)}: try "
                            f"--probe '{c.role}={names[0]}'")
                where = f" {c.phase} the live patch" if c.phase in ("before", "after") else ""
                lines.append(f"✗ {c.role} ({c.symbol}){where}: counted {c.counted}, "
                             f"the guest's summary implies {c.expected}{hint}")
    lines.append("")

    verify = result.verify
    if verify:
        if verify.agree:
            lines.append(f"cross-check with the {verify.backend} backend: counts, path shapes and costs agree ✓"
                         + (f" (but {verify.inexact_costs} cost{'s' if verify.inexact_costs > 1 else ''} of "
                            "paths the plugin marked inexact, a few instructions above GDB's)"
                            if verify.inexact_costs else ""))
        else:
            lines.append(f"cross-check with the {verify.backend} backend DISAGREES ✗: "
                         + "; ".join(verify.differences))
    inexact = result.trace.inexact_paths if result.trace is not None else None
    if inexact:
        lines.append(f"warning: {inexact} traced paths had a fault nested inside the handler; "
                     "the plugin's costs for them are too high")
    paths = result.paths or []
    if paths:
        prow = [[p.shape, p.count, p.min, p.median, p.p95, p.max] for p in paths]
        lines.append(tabulate(prow, headers=["path", "count", "min", "median", "p95", "max"],
                              tablefmt=tablefmt, colalign=("left",) + ("right",) * 5))
        lines.append("(cost: guest instructions from fault entry to its return)")
        lines += outlier_lines(result)
        if result.has("user_fault_searches"):
            lines.append(f"user faults that searched the exception table: {result.user_fault_searches}")
        lines.append("")

    if result.live_patch:
        lines += _live_patch_lines(result.live_patch, tablefmt)

    status = "complete" if run.complete else f"INCOMPLETE: {run.error}"
    wall = f"{run.wall_s:.1f} s wall" if run.wall_s else "no wall time"
    rate = f" · {run.hits_per_s:.0f} hits/s" if run.hits_per_s else ""
    lines.append(f"run: {wall} · {run.hits or 0} hits{rate} · {run.exit or ''} · {status}")
    lines += recording_lines(result)
    return "\n".join(lines) + "\n"


def size_text(size):
    """Bytes as people read them: 1.3 MB, 820 KB."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= div:
            return f"{size / div:.1f} {unit}"
    return f"{size} bytes"


def outlier_lines(result):
    """One line per path shape whose slowest instance the kept recording explained (result.recording.outliers)."""
    rec = result.recording
    return [f"  {o['text']}" for o in (rec.outliers or [])] if rec is not None else []


def recording_lines(result):
    """The report's last lines: where the run's recording came from and where it is kept."""
    rec = result.recording
    if rec is None:
        return []
    lines = []
    if rec.replayed:
        where = "kept beside the run file" if rec.replayed == "kept" else "from the recordings cache"
        lines.append(f"replayed the recording of {rec.made} ({where}): no boot this time "
                     "(--fresh-recording records anew)")
    if rec.note:
        lines.append(f"recording: {rec.note}")
    if rec.dir:
        run_file = rec.dir[:-3] if rec.dir.endswith(".rr") else "RUN.json"
        lines.append(f"recording kept: {rec.dir}/ ({size_text(rec.size_bytes or 0)}; remove it, or run with "
                     "--no-recording, to keep none)")
        if rec.index and rec.sample == 1:
            lines.append(f"open any fault: gdbfault inspect {run_file} {_suggestion(rec)}")
        else:
            lines.append("no fault index (a run with --no-trace or --cost-sample): gdbfault inspect needs every "
                         "fault traced")
    elif rec.cache and not rec.note:
        lines.append("recording cached (a run of this very guest replays it); keep it beside the run with "
                     "--output FILE, then open any fault with gdbfault inspect FILE")
    return lines


def _suggestion(rec):
    """An inspect selection worth opening: the path whose slowest fault stands out most, else fault 1."""
    best, ratio = None, 1.0
    for shape, s in (rec.shapes or {}).items():
        if s.get("median") and s["max"]["cost"] / s["median"] > ratio:
            best, ratio = shape, s["max"]["cost"] / s["median"]
    if best is None:
        return "--fault 1"
    alias = shape_alias(best)
    return f"--path {alias if alias != best else repr(best)} --max"
