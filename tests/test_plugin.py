"""The zero-stop backend: gdbfault's QEMU TCG plugin (qemu/plugin/faultcount.c)
and its Python side (gdbfault/probing/plugin_probes.py, gdbfault/machine/plugins.py).

Unit tests of the Python side run everywhere. The integration tests run real
QEMU: on the plugin's own tiny multiboot guest (qemu/plugin/tests/guest.S,
whose per-call cost is known exactly), and on both lab kernels with every
workload, checking the plugin's counts against the guest's own
GDBFAULT-RESULT truth (qemu/README.md), path shapes, determinism of path
costs, and that the plugin leaves the guest's own cycle count under
`-icount shift=0` unchanged. They skip, saying why, when the plugin cannot be
built or a lab kernel is not built.
"""
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gdbfault.probing import plugin_probes as pb
from gdbfault.kernels.profiles import pick_profile, resolve_probes
from gdbfault.kernels.symbols import load_symbols
from gdbfault.machine import plugins
from gdbfault.kernels.symbols import parse_system_map

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "qemu" / "plugin"
GUEST = PLUGIN_DIR / "build" / "tests" / "guest.elf"
GUEST_MAP = PLUGIN_DIR / "build" / "tests" / "guest.map"
KERNELS = REPO / "qemu" / "kernel" / "build"
WORKLOADS = REPO / "qemu" / "workloads" / "build"
QEMU = shutil.which("qemu-system-i386")
ITERATIONS = {"mprotect": 300, "efault": 300, "demand": 300, "mixed": 300}
FUNC_INSNS = 6          # instructions of guest.S's func, ret included
GUEST_BOOT_CALLS, GUEST_WORK_CALLS = 10, 1000
ARM_SYMBOL = "start_thread"   # lab kernel: sets up init's user registers


# ------------------------------------------------------------ unit tests

def test_write_probe_file_format(tmp_path):
    path = tmp_path / "probes.txt"
    pb.write_probe_file(path, [(0xc0101234, "entry", "do_page_fault"),
                               (0x10, "ret", "fault_return")])
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == ["0xc0101234 entry do_page_fault", "0x10 ret fault_return"]


@pytest.mark.parametrize("probe", [(-1, "count", "x"), (1, "bogus", "x"),
                                   (1, "count", "has space"), (1, "count", ""),
                                   ("0x10", "count", "x"), (1, "count")])
def test_write_probe_file_rejects_bad_probes(tmp_path, probe):
    with pytest.raises(ValueError):
        pb.write_probe_file(tmp_path / "p.txt", [probe])


def test_qemu_plugin_args_escape_commas(tmp_path):
    args = plugins.plugin_args("/x/lib.so", probes=tmp_path / "a,b.txt", out=tmp_path / "o.json")
    assert args[0] == "-plugin"
    assert args[1].startswith("file=/x/lib.so,probes=")
    assert "a,,b.txt" in args[1] and args[1].endswith("o.json")


def test_read_plugin_result_missing_and_corrupt(tmp_path):
    with pytest.raises(plugins.PluginResultError, match="missing"):
        pb.read_plugin_result(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"backend":"plugin","version":1,"hits":{')
    with pytest.raises(plugins.PluginResultError, match="not valid JSON"):
        pb.read_plugin_result(bad)
    bad.write_text(json.dumps({"backend": "plugin", "version": 2}))
    with pytest.raises(plugins.PluginResultError, match="version"):
        pb.read_plugin_result(bad)
    good = {"backend": "plugin", "version": 1,
            "hits": {"f": {"boot": 0, "workload": 3}},
            "paths": [{"phase": "workload", "entry": "f", "events": [],
                       "cost_hist": {"12": 3}}],
            "unmatched_ret": 0, "open_paths_at_exit": 0, "insns_total": 99}
    bad.write_text(json.dumps(good))
    assert pb.read_plugin_result(bad)["hits"]["f"]["workload"] == 3
    good["paths"][0]["cost_hist"] = {"x": 1}
    bad.write_text(json.dumps(good))
    with pytest.raises(plugins.PluginResultError, match="cost_hist"):
        pb.read_plugin_result(bad)


def test_plugin_library_names_what_is_missing(tmp_path):
    with pytest.raises(plugins.PluginUnavailable) as err:
        plugins.plugin_library("faultcount", tmp_path)
    message = str(err.value)
    assert "qemu-plugin.h" in message and "make -C qemu/plugin" in message
    (tmp_path / "build" / "include").mkdir(parents=True)
    (tmp_path / "build" / "include" / "qemu-plugin.h").write_text("")
    with pytest.raises(plugins.PluginUnavailable, match="libfaultcount.so"):
        plugins.plugin_library("faultcount", tmp_path)


# --------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def plugin_lib():
    if not QEMU:
        pytest.skip("qemu-system-i386 is not installed")
    build = subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR), "all"],
                           capture_output=True, text=True, check=False)
    try:
        lib = plugins.plugin_library()
    except plugins.PluginUnavailable as err:
        pytest.skip(f"plugin not built: {err} ({build.stderr.strip()[-300:]})")
    subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR / "tests")],
                   capture_output=True, text=True, check=False)
    return lib


def run_guest(lib, tmp, kernel, probes, initrd=None, append=None, icount=False,
              plugin=True, timeout=120, extra=()):
    """Run QEMU to the guest's end; return (exit code, serial text, plugin result)."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    serial, out, probe_file = tmp / "serial.log", tmp / "out.json", tmp / "probes.txt"
    cmd = [QEMU, "-m", "64", "-nodefaults", "-display", "none", "-no-reboot",
           "-kernel", str(kernel), "-serial", f"file:{serial}",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    if initrd:
        cmd += ["-initrd", str(initrd)]
    if append:
        cmd += ["-append", append]
    if icount:
        cmd += ["-icount", "shift=0"]
    cmd += list(extra)
    if plugin:
        pb.write_probe_file(probe_file, probes)
        cmd += plugins.plugin_args(lib, probes=probe_file, out=out)
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    text = serial.read_text(errors="replace") if serial.exists() else ""
    result = pb.read_plugin_result(out) if plugin else None
    return proc.returncode, text, result


def guest_result(text):
    match = re.search(r"^GDBFAULT-RESULT (\{.*\})\s*$", text, re.M)
    assert match, f"no GDBFAULT-RESULT in serial output: {text[-800:]}"
    return json.loads(match.group(1))


def hits(result, name):
    return result["hits"][name]["boot"] + result["hits"][name]["workload"]


def shapes(result, phase=None):
    """Counter of event tuples -> number of paths."""
    shape_count = Counter()
    for path in result["paths"]:
        if phase is None or path["phase"] == phase:
            shape_count[tuple(path["events"])] += sum(path["cost_hist"].values())
    return shape_count


# ---------------------------------------------- the plugin's own test guest

def guest_symbols():
    return parse_system_map(GUEST_MAP.read_text(), GUEST_MAP)


def test_guest_counts_phases_and_exact_cost(plugin_lib, tmp_path):
    s = guest_symbols()
    probes = [(s["func"], "entry", "func"), (s["func_event"], "event", "func_event"),
              (s["after_call"], "ret", "after_call"),
              (s["after_call_boot"], "ret", "after_call_boot"),
              (s["arm_here"], "arm", "arm_here"), (s["_start"], "count", "start")]
    rc, _, res = run_guest(plugin_lib, tmp_path, GUEST, probes)
    assert rc == 3
    assert res["hits"]["func"] == {"boot": GUEST_BOOT_CALLS, "workload": GUEST_WORK_CALLS,
                                   "kind": "entry", "address": hex(s["func"])}
    assert res["hits"]["start"]["boot"] == 1 and res["hits"]["start"]["workload"] == 0
    assert res["hits"]["arm_here"]["workload"] == 1
    assert res["hits"]["after_call_boot"]["workload"] == 0
    by_phase = {p["phase"]: p for p in res["paths"]}
    assert by_phase["boot"]["cost_hist"] == {str(FUNC_INSNS): GUEST_BOOT_CALLS}
    assert by_phase["workload"]["cost_hist"] == {str(FUNC_INSNS): GUEST_WORK_CALLS}
    assert by_phase["workload"]["events"] == ["func_event"]
    assert by_phase["workload"]["entry"] == "func"
    assert res["unmatched_ret"] == 0 and res["open_paths_at_exit"] == 0


@pytest.mark.parametrize("entry,ret,cost", [("func_event", "after_call", 4),
                                             ("func", "func_event", 2)])
def test_guest_probes_inside_a_tb_cost_exact(plugin_lib, tmp_path, entry, ret, cost):
    """The counter advances a whole TB at a time; a probe in the middle of a
    TB (func_event is func's third instruction) still reads the exact count."""
    s = guest_symbols()
    probes = [(s[entry], "entry", entry), (s[ret], "ret", ret),
              (s["arm_here"], "arm", "arm_here")]
    rc, _, res = run_guest(plugin_lib, tmp_path, GUEST, probes)
    assert rc == 3
    work = [p for p in res["paths"] if p["phase"] == "workload"]
    assert work[0]["cost_hist"] == {str(cost): GUEST_WORK_CALLS}
    assert res["inexact_paths"] == 0


def test_guest_two_vcpus_same_result(plugin_lib, tmp_path):
    """With -smp 2 the plugin switches to per-vCPU counters: same figures."""
    s = guest_symbols()
    probes = [(s["func"], "entry", "func"), (s["after_call"], "ret", "after_call"),
              (s["arm_here"], "arm", "arm_here")]
    rc, _, res = run_guest(plugin_lib, tmp_path, GUEST, probes, extra=["-smp", "2"])
    assert rc == 3 and res["vcpus"] == 2
    assert res["hits"]["func"]["boot"] == GUEST_BOOT_CALLS
    work = [p for p in res["paths"] if p["phase"] == "workload"]
    assert work[0]["cost_hist"] == {str(FUNC_INSNS): GUEST_WORK_CALLS}


def test_guest_unmatched_ret_and_no_arm(plugin_lib, tmp_path):
    s = guest_symbols()
    rc, _, res = run_guest(plugin_lib, tmp_path, GUEST,
                           [(s["after_call"], "ret", "after_call")])
    assert rc == 3
    assert res["unmatched_ret"] == GUEST_WORK_CALLS
    assert res["hits"]["after_call"] == {"boot": 0, "workload": GUEST_WORK_CALLS,
                                         "kind": "ret", "address": hex(s["after_call"])}


def test_guest_nested_paths_and_open_at_exit(plugin_lib, tmp_path):
    """Entries without returns stack up (capped), and are reported at exit."""
    s = guest_symbols()
    rc, _, res = run_guest(plugin_lib, tmp_path, GUEST, [(s["func"], "entry", "func")])
    assert rc == 3
    assert res["open_paths_at_exit"] == GUEST_BOOT_CALLS + GUEST_WORK_CALLS
    assert res["paths"] == []


def test_guest_cost_equals_icount_difference(plugin_lib, tmp_path):
    """Independent check: QMP query-replay icount at the two breakpoints."""
    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    s = guest_symbols()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "path_cost_crosscheck.py"), "--kernel",
                           str(GUEST), "--entry", hex(s["func"]), "--ret",
                           hex(s["after_call"]), "--nth", "15"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["icount_cost"] == FUNC_INSNS


# ---------------------------------------------------------- the lab kernels

def lab_kernel(variant):
    elf, smap = KERNELS / variant / "kernel.elf", KERNELS / variant / "System.map"
    if not (elf.is_file() and smap.is_file()):
        pytest.skip(f"lab kernel {variant} is not built ({elf}); run make -C qemu/kernel")
    return elf, smap


def workload(name):
    path = WORKLOADS / f"{name}.elf"
    if not path.is_file():
        pytest.skip(f"workload {name} is not built ({path}); run make -C qemu/workloads")
    return path


_RUNS = {}


def kernel_probe_list(kernel, system_map, arm_symbol):
    """The plugin's probe list for a kernel outside a run: the probes `gdbfault attach` would arm,
    from the same symbols and profile, plus an arm probe on `arm_symbol`."""
    symbols = load_symbols(kernel, system_map)
    probes = resolve_probes(pick_profile(symbols), symbols)
    return pb.plugin_probe_list(kernel, symbols, probes, symbols.require(arm_symbol), arm_name=arm_symbol)


def lab_runs(lib, tmp_factory, variant):
    """All four workloads on one lab kernel under -icount shift=0 with the
    plugin, run two at a time; cached for the session."""
    if variant in _RUNS:
        return _RUNS[variant]
    elf, smap = lab_kernel(variant)
    probes = kernel_probe_list(elf, smap, arm_symbol=ARM_SYMBOL)
    names = list(ITERATIONS)
    paths = {name: workload(name) for name in names}

    def one(name):
        rc, text, res = run_guest(lib, tmp_factory.mktemp(f"{variant}-{name}"), elf, probes,
                                  initrd=paths[name], append=f"iterations={ITERATIONS[name]}",
                                  icount=True)
        return name, (rc, guest_result(text), res)

    with ThreadPoolExecutor(max_workers=2) as pool:
        _RUNS[variant] = dict(pool.map(one, names))
    _RUNS[variant]["_probes"] = probes
    return _RUNS[variant]


@pytest.mark.parametrize("variant", ["vanilla", "patched"])
@pytest.mark.parametrize("name", list(ITERATIONS))
def test_lab_counts_match_guest_truth(plugin_lib, tmp_path_factory, variant, name):
    rc, truth, res = lab_runs(plugin_lib, tmp_path_factory, variant)[name]
    assert rc == 0, f"QEMU exit status {rc}"
    assert truth["errors"] == 0 and truth["iterations"] == ITERATIONS[name]
    sigsegv, efault, demand = truth["sigsegv"], truth["efault"], truth["demand_pages"]
    assert hits(res, "force_sig") == sigsegv
    expected_search = sigsegv + efault if variant == "vanilla" else efault
    assert hits(res, "search_exception_table") == expected_search
    assert hits(res, "handle_mm_fault") == sigsegv + demand
    assert hits(res, "do_page_fault") == 2 * sigsegv + efault + demand
    # every fault entry is one closed path
    assert sum(shapes(res).values()) == hits(res, "do_page_fault")
    assert res["unmatched_ret"] == 0 and res["open_paths_at_exit"] == 0
    # no TB was left before its last instruction inside a fault path
    assert res["inexact_paths"] == 0
    assert all(p["entry"] == "do_page_fault" for p in res["paths"])
    # phases: armed when init starts; the lab kernel takes no fault of its own
    assert res["hits"][ARM_SYMBOL] == {"boot": 0, "workload": 1, "kind": "arm",
                                       "address": res["hits"][ARM_SYMBOL]["address"]}
    assert all(h["boot"] == 0 for h in res["hits"].values())
    assert all(p["phase"] == "workload" for p in res["paths"])


@pytest.mark.parametrize("variant", ["vanilla", "patched"])
def test_lab_path_shapes(plugin_lib, tmp_path_factory, variant):
    runs = lab_runs(plugin_lib, tmp_path_factory, variant)
    rc, truth, res = runs["mprotect"]
    n = truth["sigsegv"]
    assert n > 0
    bad_area = (("search_exception_table", "force_sig") if variant == "vanilla"
                else ("force_sig",))
    assert shapes(res) == Counter({bad_area: n, ("handle_mm_fault",): n})
    rc, truth, res = runs["efault"]
    assert truth["efault"] > 0
    assert shapes(res)[("search_exception_table",)] == truth["efault"]
    rc, truth, res = runs["demand"]
    assert truth["demand_pages"] > 0
    assert shapes(res) == Counter({("handle_mm_fault",): truth["demand_pages"]})


def test_lab_costs_deterministic_and_no_observer_effect(plugin_lib, tmp_path_factory):
    """A second identical run gives identical cost histograms, and a run
    without the plugin gives the same guest-measured cycles per iteration."""
    elf, smap = lab_kernel("vanilla")
    first = lab_runs(plugin_lib, tmp_path_factory, "vanilla")["mprotect"]
    probes = kernel_probe_list(elf, smap, arm_symbol=ARM_SYMBOL)
    args = dict(initrd=workload("mprotect"),
                append=f"iterations={ITERATIONS['mprotect']}", icount=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        again = pool.submit(run_guest, plugin_lib, tmp_path_factory.mktemp("again"),
                            elf, probes, **args)
        bare = pool.submit(run_guest, plugin_lib, tmp_path_factory.mktemp("bare"),
                           elf, probes, plugin=False, **args)
        rc2, text2, res2 = again.result()
        rc3, text3, _ = bare.result()
    assert rc2 == 0 and rc3 == 0
    assert res2["paths"] == first[2]["paths"]
    # (insns_total is not compared: under icount with sleep=on an idle guest's
    # halts last a wall-clock time, so whole-run totals may differ.)
    truth1, truth2, truth3 = first[1], guest_result(text2), guest_result(text3)
    assert truth1["cycles"] == truth2["cycles"] == truth3["cycles"]
    assert truth1["cycles_per_iteration"] == truth3["cycles_per_iteration"]


def test_lab_tb_left_early_inside_a_path_is_flagged(plugin_lib, tmp_path):
    """A path whose window holds a TB left mid-way (here: from the fault
    return site to the next fault entry, which contains the faulting user
    instruction) cannot be costed exactly by TB counting: it is counted in
    inexact_paths."""
    elf, smap = lab_kernel("vanilla")
    probes = kernel_probe_list(elf, smap, arm_symbol=ARM_SYMBOL)
    addr = {kind: a for a, kind, _ in probes if kind in ("entry", "ret")}
    swapped = [(addr["ret"], "entry", "fault_return"), (addr["entry"], "ret", "next_fault")]
    rc, truth, res = run_guest(plugin_lib, tmp_path, elf, swapped, initrd=workload("mprotect"),
                               append="iterations=20", icount=True)
    assert rc == 0
    closed = sum(sum(p["cost_hist"].values()) for p in res["paths"])
    assert closed > 0 and res["inexact_paths"] == closed


@pytest.mark.parametrize("variant,nth", [("vanilla", 5), ("vanilla", 6), ("patched", 5)])
def test_lab_path_cost_equals_icount_difference(plugin_lib, tmp_path_factory, variant, nth):
    """One mprotect fault's cost, read independently: QMP query-replay icount
    at a breakpoint on do_page_fault and at the return site, -icount shift=0."""
    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    runs = lab_runs(plugin_lib, tmp_path_factory, variant)
    probes = {kind: addr for addr, kind, _ in runs["_probes"] if kind in ("entry", "ret")}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "path_cost_crosscheck.py"), "--kernel",
                           str(lab_kernel(variant)[0]), "--initrd", str(workload("mprotect")),
                           "--append", "iterations=10", "--entry", hex(probes["entry"]),
                           "--ret", hex(probes["ret"]), "--nth", str(nth)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    cost = json.loads(proc.stdout.splitlines()[-1])["icount_cost"]
    # faults alternate: odd = bad area (SIGSEGV), even = resolved retry
    shape = ("handle_mm_fault",) if nth % 2 == 0 else (
        ("search_exception_table", "force_sig") if variant == "vanilla" else ("force_sig",))
    hist = {}
    for path in runs["mprotect"][2]["paths"]:
        if tuple(path["events"]) == shape:
            hist = path["cost_hist"]
    # the plugin's dominant cost for that shape is the cost icount measures
    assert max(hist, key=hist.get) == str(cost)
