"""kprofile.c's opt-in `node_calls=on`: entries per call-tree node (for a
per-fault call tree with calls, `gdbfault inspect`), and nothing else changed.

Self-contained: the plugin's ranges file is written here from the lab
kernel's System.map, and QEMU is started directly (no gdbfault run), so the
test checks the plugin alone.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "qemu" / "plugin" / "build" / "libkprofile.so"
KERNEL = REPO / "qemu" / "kernel" / "build" / "vanilla"
WORKLOAD = REPO / "qemu" / "workloads" / "build" / "mprotect.elf"
ITERATIONS = 20
# the lab kernel's vectors: reached by the CPU, not by a call
VECTOR = re.compile(r"^(system_call|page_fault|irq\d+_interrupt|divide_error|debug|nmi|int3|overflow|"
                    r"bounds|invalid_op|device_not_available|double_fault|coprocessor_segment_overrun|"
                    r"invalid_TSS|segment_not_present|stack_segment|general_protection|"
                    r"spurious_interrupt_bug|coprocessor_error|alignment_check|machine_check|"
                    r"simd_coprocessor_error|reserved_exception)$")


def write_ranges(path):
    rows = []
    for line in (KERNEL / "System.map").read_text().splitlines():
        address, kind, name = line.split()[:3]
        if kind in "tT":
            rows.append((int(address, 16), name))
    rows.sort()
    lines = ["base 0xc0000000"]
    for (start, name), (end, _) in zip(rows, rows[1:]):
        if end > start and start >= 0xC0000000:
            lines.append(f"func {start:#x} {end:#x} {int(bool(VECTOR.match(name)))} {name}")
    path.write_text("\n".join(lines) + "\n")


def profile(tmp_path, name, options=""):
    ranges, out = tmp_path / "ranges.txt", tmp_path / f"{name}.json"
    if not ranges.exists():
        write_ranges(ranges)
    argv = ["qemu-system-i386", "-m", "64", "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(KERNEL / "kernel.elf"), "-initrd", str(WORKLOAD),
            "-append", f"iterations={ITERATIONS}", "-icount", "shift=0,sleep=off", "-monitor", "none",
            "-serial", f"file:{tmp_path / (name + '.serial')}",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-plugin", f"{PLUGIN},ranges={ranges},out={out}{options}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    return json.loads(out.read_text())


@pytest.fixture
def plugin_built(lab_built):
    if not shutil.which("qemu-system-i386"):
        pytest.skip("qemu-system-i386 not installed")
    subprocess.run(["make", "-s", "-C", str(REPO / "qemu" / "plugin")], capture_output=True)
    if not PLUGIN.is_file():
        pytest.skip("kprofile plugin not built")


@pytest.mark.qemu
def test_node_calls_count_each_push_once_and_change_nothing_else(plugin_built, tmp_path, no_leaks):
    plain = profile(tmp_path, "plain", ",chains=on")
    counted = profile(tmp_path, "counted", ",chains=on,node_calls=on")
    assert "node_calls" not in plain
    # the option adds one key and changes no count (sleep=off: guest time
    # follows instructions only, so two boots run the very same instructions)
    assert {k: v for k, v in counted.items() if k != "node_calls"} == plain
    calls = {node: sum(per_phase) for node, per_phase in counted["node_calls"]}
    nodes = {n[0]: n for n in counted["nodes"]}
    assert set(calls) <= set(nodes)
    # every entry of a function (a call, or a trap frame) entered one node of it
    per_function = {}
    for node, n in calls.items():
        per_function[nodes[node][2]] = per_function.get(nodes[node][2], 0) + n
    entries = {f["id"]: sum(f["entries"]) for f in counted["functions"] if sum(f["entries"])}
    # except the boot's first frames (the multiboot entry, below the kernel's base, then _start,
    # reached by a jump into it): roots pushed once each, which are not a function's entry
    boot_roots = {f for f in per_function if f not in entries
                  and all(nodes[n][1] == 0 for n in calls if nodes[n][2] == f)}
    assert len(boot_roots) <= 2 and all(per_function[f] == 1 for f in boot_roots)
    assert {f: n for f, n in per_function.items() if f not in boot_roots} == entries
    # the vanilla kernel's user faults: one search_exception_table call, four
    # search_one_table calls under it (the kernel's table and three modules')
    names = {f["id"]: f["name"] for f in counted["functions"]}
    search = [i for i, n in nodes.items() if names.get(n[2]) == "search_exception_table"]
    assert search
    for s in search:
        below = [i for i, n in nodes.items() if n[1] == s and names.get(n[2]) == "search_one_table"]
        assert [calls[i] for i in below] == [4 * calls[s]]
    assert sum(calls[s] for s in search) >= ITERATIONS
