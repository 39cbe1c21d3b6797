"""Render a RunResult: a readable table by default, JSON/CSV/markdown for machines.

The RunResult (schema "gdbfault.run/1") is a plain dict:
  tool      {gdbfault, qemu, gdb}                      versions
  kernel    {path, lab, variant, symbols, profile, model}
  workload  {name, iterations, command_line}
  mode      {backend, accel, icount}
  probes    [{role, symbol, address, hits{boot, workload}, total, duplicates, per_iteration}]
  guest     the workload's own GDBFAULT-RESULT object, or null
  checks    [{role, symbol, expected, counted, ok}]    probe hits vs the guest's truth
  paths     [{shape, events, count, costed, min, median, p95, max, cost_hist}]  (when traced)
  user_fault_searches   traced faults that searched the table and raised a signal
  run       {complete, error, exit_status, exit, wall_s, hits, duplicates, hits_per_s,
             duplicate_filter (False when counted in a replay, where none is needed)}
JSON output is that dict; CSV is one row per probe with the columns in CSV_FIELDS.
"""
import csv
import io
import json
from pathlib import Path

from tabulate import tabulate

from gdbfault.errors import GdbfaultError

__all__ = ["render", "load_run", "save_run", "FORMATS", "CSV_FIELDS"]

FORMATS = ("table", "json", "csv", "markdown")
CSV_FIELDS = ("kernel", "variant", "workload", "iterations", "role", "symbol", "address",
              "hits_boot", "hits_workload", "hits_total", "per_iteration", "duplicates",
              "expected", "match")


def save_run(result, path):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def load_run(path):
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GdbfaultError(f"run file not found: {path}")
    except json.JSONDecodeError as exc:
        raise GdbfaultError(f"{path} is not a gdbfault run (invalid JSON: {exc})")
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("gdbfault.run/"):
        raise GdbfaultError(f"{path} is not a gdbfault run file (no gdbfault.run schema)")
    return data


def render(result, fmt="table"):
    if fmt == "json":
        return json.dumps(result, indent=1) + "\n"
    if fmt == "csv":
        return _csv(result)
    if fmt in ("table", "markdown"):
        return _text(result, "github" if fmt == "markdown" else "simple")
    raise GdbfaultError(f"unknown format '{fmt}'", f"choose one of: {', '.join(FORMATS)}")


def kernel_label(result):
    k = result["kernel"]
    if k.get("lab"):
        return f"lab kernel ({k.get('variant')})"
    return Path(k["path"]).name


def _expected_by_role(result):
    return {c["role"]: c for c in result.get("checks", [])}


def _csv(result):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    checks = _expected_by_role(result)
    for p in result["probes"]:
        c = checks.get(p["role"])
        w.writerow({"kernel": result["kernel"]["path"], "variant": result["kernel"].get("variant") or "",
                    "workload": result["workload"]["name"] or "",
                    "iterations": (result.get("guest") or {}).get("iterations", result["workload"]["iterations"]),
                    "role": p["role"], "symbol": p["symbol"], "address": f"{p['address']:#x}",
                    "hits_boot": p["hits"]["boot"], "hits_workload": p["hits"]["workload"],
                    "hits_total": p["total"], "per_iteration": p.get("per_iteration"),
                    "duplicates": p["duplicates"],
                    "expected": c["expected"] if c else "", "match": ("yes" if c["ok"] else "no") if c else ""})
    return out.getvalue()


def _seconds(ticks, hz):
    return f"{ticks / hz:.2f} s" if hz else f"{ticks} ticks"


def _text(result, tablefmt):
    lines = []
    t, mode = result["tool"], result["mode"]
    icount = ", -icount shift=0" if mode.get("icount") else ""
    gdb = f" · gdb {t['gdb']}" if t.get("gdb") else ""
    lines.append(f"{kernel_label(result)} · qemu-system-i386 {t['qemu']} TCG{icount}{gdb}"
                 f" · probes: {result['kernel']['profile']} profile · backend: {mode['backend']}")
    w = result["workload"]
    lines.append(f"workload {w['name']}" + (f" × {w['iterations']}" if w.get("iterations") else "")
                 + (f"  (kernel command line: {w['command_line']})" if w.get("command_line") else ""))
    lines.append("")

    show_boot = any(p["hits"]["boot"] for p in result["probes"])
    headers = ["role", "symbol", "address"] + (["boot hits"] if show_boot else []) + ["hits", "per iteration"]
    rows = []
    for p in result["probes"]:
        per = p.get("per_iteration")
        rows.append([p["role"], p["symbol"], f"{p['address']:#010x}"]
                    + ([p["hits"]["boot"]] if show_boot else [])
                    + [p["hits"]["workload"], f"{per:.2f}" if per is not None else "-"])
    lines.append(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                          colalign=("left", "left", "left") + ("right",) * (len(headers) - 3)))
    lines.append("")

    g = result.get("guest")
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
        if mode.get("icount"):
            lines.append("(under -icount shift=0 one guest instruction is one cycle, 1 ns of guest time)")
    else:
        lines.append("guest says: nothing (no GDBFAULT-RESULT line)")

    checks = result.get("checks") or []
    dups = result["run"].get("duplicates", 0)
    if checks:
        bad = [c for c in checks if not c["ok"]]
        if not bad:
            # A replay never reports a stop twice, so gdbfault runs no filter there.
            filtered = ("counted in a replay: no duplicate stop reports to filter"
                        if result["run"].get("duplicate_filter") is False
                        else f"duplicate stop reports filtered: {dups}")
            lines.append(f"counts match the guest's own summary ✓ ({len(checks)} probes checked; "
                         f"{filtered})")
        else:
            for c in bad:
                lines.append(f"✗ {c['role']} ({c['symbol']}): counted {c['counted']}, "
                             f"the guest's summary implies {c['expected']}")
    lines.append("")

    verify = result.get("verify")
    if verify:
        if verify["agree"]:
            lines.append(f"cross-check with the {verify['backend']} backend: counts, path shapes and costs agree ✓")
        else:
            lines.append(f"cross-check with the {verify['backend']} backend DISAGREES ✗: "
                         + "; ".join(verify["differences"]))
    inexact = (result.get("trace") or {}).get("inexact_paths")
    if inexact:
        lines.append(f"warning: {inexact} traced paths had a fault nested inside the handler; "
                     "the plugin's costs for them are too high")
    paths = result.get("paths") or []
    if paths:
        prow = [[p["shape"], p["count"], p["min"], p["median"], p["p95"], p["max"]] for p in paths]
        lines.append(tabulate(prow, headers=["path", "count", "min", "median", "p95", "max"],
                              tablefmt=tablefmt, colalign=("left",) + ("right",) * 5))
        lines.append("(cost: guest instructions from fault entry to its return)")
        if "user_fault_searches" in result:
            lines.append(f"user faults that searched the exception table: {result['user_fault_searches']}")
        lines.append("")

    r = result["run"]
    status = "complete" if r.get("complete") else f"INCOMPLETE: {r.get('error')}"
    wall = f"{r['wall_s']:.1f} s wall" if r.get("wall_s") else "no wall time"
    rate = f" · {r['hits_per_s']:.0f} hits/s" if r.get("hits_per_s") else ""
    lines.append(f"run: {wall} · {r.get('hits', 0)} hits{rate} · {r.get('exit') or ''} · {status}")
    return "\n".join(lines) + "\n"
