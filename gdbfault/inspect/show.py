"""What `gdbfault inspect` prints: the fault card, its call tree, the commands' outputs (table or JSON)."""
import json

__all__ = ["render_fault", "FORMATS"]

FORMATS = ("table", "json")


def _hex(value, wide):
    return "-" if value is None else f"{value:#0{18 if wide else 10}x}"


def _access(f):
    what = "instruction fetch" if f["fetch"] else "write" if f["write"] else "read"
    return (f"{f['mode']} mode, {what}, {'protection violation' if f['present'] else 'page not present'} "
            f"(error code {f['error_code']:#x})")


def _card(data):
    f = data["fault"]
    wide = data["arch"] == "x86_64"
    iteration = ""
    if f["iteration"] is not None:
        others = data["iteration_faults"]
        span = f"faults {others[0]}–{others[-1]}" if len(others) > 1 else f"fault {others[0]}"
        iteration = f" · iteration {f['iteration']} ({span})" if f["iteration"] else \
            " · before the first iteration"
    lines = [f"fault {f['index']} of {f['of']}{iteration} · {f['shape']} · {f['cost']:,} instructions · "
             f"guest instruction {f['icount']:,}",
             f"{_access(f)} · {'RIP' if wide else 'EIP'} {_hex(f['eip'], wide)} <{f['eip_symbol']}>: "
             f"{f['instruction']} · CR2 {_hex(f['cr2'], wide)}",
             "kernel stack at the fault: " + " ← ".join(data["backtrace"])]
    if data["deepest"]:
        lines.append(f"deepest point ({len(data['deepest'])} frames): " + " → ".join(data["deepest"]))
    return lines


def _tree(data):
    calls = data["calls"]
    if calls is None:
        return []
    title = f"where its {data['fault']['cost']:,} instructions went"
    names = ["  " * c["depth"] + c["symbol"] for c in calls]
    width = max([len(title)] + [len(n) for n in names]) + 2
    lines = ["", f"{title:<{width}}{'instructions':>12}{'own':>9}{'calls':>7}"]
    lines += [f"{n:<{width}}{c['instructions']:>12,}{c['own']:>9,}{c['calls']:>7,}" for n, c in zip(names, calls)]
    total, cost = data["tree_total"], data["fault"]["cost"]
    if total != cost:
        early = data["left_early"] or 0
        lines.append(f"(the tree counts {total:,}: {early} instruction(s) that ran again — a fault's attempt, "
                     "or an I/O instruction QEMU re-runs alone — counted twice, as -icount does not)"
                     if total - cost == early else f"(the tree counts {total:,} instructions, the tracer {cost:,}; "
                     f"{early} block(s) were left early)")
    return lines


def _commands(data):
    lines = []
    for item in data["ex"]:
        where = ""
        if item["icount"] is not None:
            delta = item["from_entry"]
            where = f"   [guest instruction {item['icount']:,} = entry {delta:+,}]" if delta else \
                f"   [guest instruction {item['icount']:,} = the entry]"
        lines += ["", f"(gdb) {item['command']}{where}"] + ([item["output"]] if item["output"] else [])
    return lines


def render_fault(data, fmt="table"):
    """The text of an opened fault (fault.open_fault's dict)."""
    if fmt == "json":
        return json.dumps({k: v for k, v in data.items() if not callable(v)}, indent=1) + "\n"
    lines = _card(data) + _tree(data) + _commands(data)
    t = data["timings"]
    parts = [f"reach {t['reach_s']:.2f}"] + ([f"call tree {t['tree_s']:.2f}"] if "tree_s" in t else []) \
        + [f"GDB {t['gdb_s']:.2f}"]
    lines += [""] + [f"note: {n}" for n in data["notes"]]
    lines.append(f"recording {data['recording']['dir']} (made {data['recording']['made']}) · "
                 f"{t['total_s']:.1f} s ({', '.join(parts)})")
    if not data["ex"]:
        lines.append("next: --ex 'reverse-stepi' (GDB commands here, repeatable) · --gdb (a GDB prompt here: "
                     "continue/reverse-continue go to the next/previous fault)")
    return "\n".join(lines) + "\n"
