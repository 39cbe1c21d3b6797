"""The kernel profile: `gdbfault profile` and its plugin (qemu/plugin/kprofile.c).

Unit tests render recorded plugin output (tests/data/kprofile-*-20.json: the
plugin's JSON and the guest's own summary from real runs of both lab kernels,
mprotect × 20). End-to-end tests run real QEMU with the plugin on the lab
kernels at small iteration counts and check the profile against what the
kernels are known to do and against the guest's own cycle count.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gdbfault.kprofile.ranges import kernel_functions
from gdbfault.kprofile.result import build_profile, read_kprofile_result
from gdbfault.kprofile.run import run_profile
from gdbfault.model.spec import LivePatchSpec, RunSpec, validate_spec
from gdbfault.kprofile.report import profile_changes, render_changes, render_profile

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
KERNELS = REPO / "qemu" / "kernel" / "build"
ITERATIONS = 200
# search_exception_table with its helper search_one_table, per user fault
# that ends in SIGSEGV (one per iteration): the vanilla lab kernel does one
# failed binary search of the kernel's table and one of each of its three
# modules' tables
SEARCH_PER_ITERATION = 246
TABLES = 4


def recorded(variant):
    data = json.loads((DATA / f"kprofile-{variant}-20.json").read_text())
    meta = {"kernel": {"path": "kernel.elf", "lab": True, "variant": variant},
            "workload": {"name": "mprotect", "iterations": 20}, "mode": {"icount": True},
            "iterations": 20}
    return build_profile(data["plugin"], data["guest"], meta, [])


def stack_has(folded_text, caller, callee):
    return any(f"{caller};{callee}" in line.split(" ")[0] for line in folded_text.splitlines())


# ------------------------------------------------------------------ unit tests

def test_recorded_folded_lines_are_flamegraph_format():
    text = render_profile(recorded("vanilla"), "folded")
    lines = text.splitlines()
    assert lines and all(len(line.rsplit(" ", 1)) == 2 and line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert all(" " not in line.rsplit(" ", 1)[0] for line in lines)
    assert stack_has(text, "do_page_fault", "search_exception_table")
    assert "page_fault;do_page_fault;search_exception_table;search_one_table " in text
    assert not stack_has(render_profile(recorded("patched"), "folded"), "do_page_fault", "search_exception_table")


def test_recorded_folded_sums_to_the_kernel_total():
    for variant in ("vanilla", "patched"):
        profile = recorded(variant)
        assert sum(count for _, count in profile["folded"]) == profile["total"]["kernel"]
        assert sum(f["instructions"] for f in profile["functions"]) == profile["total"]["kernel"]


def test_recorded_search_cost_per_iteration():
    by_name = {f["symbol"]: f for f in recorded("vanilla")["functions"]}
    search = by_name["search_exception_table"]
    assert search["inclusive"] / 20 == SEARCH_PER_ITERATION
    assert search["inclusive"] == search["instructions"] + by_name["search_one_table"]["instructions"]
    assert search["entries"] == 20 and by_name["search_one_table"]["entries"] == TABLES * 20
    assert "search_exception_table" not in {f["symbol"] for f in recorded("patched")["functions"]}


def test_recorded_accounting_matches_guest_cycles():
    for variant in ("vanilla", "patched"):
        profile = recorded(variant)
        acc, total = profile["accounting"], profile["total"]
        assert acc["counted"] == total["kernel"] + total["user"]
        # one faulting store per iteration, and the retried one after sigreturn: 2 × 20
        assert acc["left_early_blocks"] == 40 and acc["inexact_blocks"] == 0
        assert acc["counted"] - acc["left_early_blocks"] == profile["guest"]["cycles"]
        assert acc["exact"] and acc["agree"]


def test_recorded_table_layout():
    text = render_profile(recorded("vanilla"), "table", top=5)
    lines = text.splitlines()
    assert lines[0].startswith("kernel profile: lab kernel (vanilla), workload mprotect × 20")
    assert lines[1].startswith("kernel instructions in the workload: 44,685 (88.0%, 2,234.2 per iteration)")
    assert "user: 6,076" in lines[1] and "boot (apart): " in lines[1]
    header = lines[3].split()
    assert header[:2] == ["function", "instructions"] and "entries" in header and "load" in header
    body = lines[5:10]
    # most instructions first (the first iteration's demand-zero memset leads at 20 iterations)
    counts = [int(line.split()[1].replace(",", "")) for line in body]
    assert len(body) == 5 and counts == sorted(counts, reverse=True)
    assert any("-icount shift=0" in line and "204 page_fault" in line for line in lines)
    assert any(line.startswith("kernel + user = 50,761 = the guest's cycles 50,721 + 40 ") for line in lines)
    md = render_profile(recorded("vanilla"), "markdown", top=3)
    assert "| function" in md and md.count("\n|") >= 4


def test_recorded_csv_and_json():
    import csv
    import io
    profile = recorded("vanilla")
    rows = list(csv.DictReader(io.StringIO(render_profile(profile, "csv", top=4))))
    assert len(rows) == 4
    rows = {r["symbol"]: r for r in csv.DictReader(io.StringIO(render_profile(profile, "csv", top=100)))}
    assert float(rows["do_signal"]["per_iteration"]) == pytest.approx(241.0)
    assert int(rows["do_signal"]["entries"]) == 20
    data = json.loads(render_profile(profile, "json"))
    f = data["functions"][0]
    assert set(f) >= {"symbol", "address", "size", "instructions", "entries", "load"}
    assert f["load"] == pytest.approx(f["instructions"] / f["size"], abs=1e-4)
    assert set(data["total"]) >= {"kernel", "user", "boot"} and data["guest"]["iterations"] == 20


def test_recorded_changes_put_the_search_first():
    rows = profile_changes(recorded("vanilla"), recorded("patched"))
    top = rows[0]
    assert top["symbol"] == "search_exception_table" and top["helpers"] == ["search_one_table"]
    assert top["before"] == SEARCH_PER_ITERATION and top["after"] == 0
    text = render_changes(rows, {"before": "vanilla", "after": "patched"})
    assert text.splitlines()[2].startswith("search_exception_table (+ search_one_table)")


def test_kernel_functions_from_system_map_only(tmp_path):
    smap = KERNELS / "vanilla" / "System.map"
    if not smap.is_file():
        pytest.skip("lab kernel not built")
    funcs = kernel_functions(tmp_path / "no-such-kernel", smap)
    by_name = {f["symbol"]: f for f in funcs}
    assert by_name["search_exception_table"]["end"] > by_name["search_exception_table"]["address"]
    assert by_name["page_fault"]["entry"] and not by_name["do_page_fault"]["entry"]
    # names sharing an address are one function with aliases
    ret = by_name["ret_from_exception"]
    assert set(ret["aliases"]) == {"ret_from_intr", "ret_from_sys_call"}
    assert by_name["ret_with_reschedule"]["address"] == ret["end"]
    starts = [f["address"] for f in funcs]
    assert starts == sorted(starts) and all(a["end"] <= b["address"] for a, b in zip(funcs, funcs[1:]))


def test_recorded_flat_result_has_no_chains():
    """A flat-mode result (the default: no call chains) has no folded stacks
    and no inclusive costs; its table shows own instructions per entry, not a
    made-up inclusive column, and folded output and profile changes are refused."""
    data = json.loads((DATA / "kprofile-vanilla-20.json").read_text())
    flat = dict(data["plugin"], mode="flat", nodes=[], stack=None)
    meta = {"kernel": {"path": "kernel.elf", "lab": True, "variant": "vanilla"},
            "workload": {"name": "mprotect", "iterations": 20}, "mode": {"icount": True}, "iterations": 20}
    profile = build_profile(flat, data["guest"], meta, [])
    chained = recorded("vanilla")
    assert profile["chains"] is False and chained["chains"] is True
    assert profile["folded"] == [] and all(f["inclusive"] is None for f in profile["functions"])
    assert [(f["symbol"], f["instructions"], f["entries"]) for f in profile["functions"]] == \
        [(f["symbol"], f["instructions"], f["entries"]) for f in chained["functions"]]
    assert profile["accounting"] == chained["accounting"]
    text = render_profile(profile, "table", top=40)
    header = text.splitlines()[3]
    assert "per entry" in header and "incl./iter" not in text
    row = next(line.split() for line in text.splitlines() if line.startswith("search_one_table "))
    assert row[-1] == "44.25"            # 177 own instructions per iteration ÷ its 4 calls
    with pytest.raises(Exception, match="call chains"):
        render_profile(profile, "folded")
    with pytest.raises(Exception, match="call chains"):
        profile_changes(profile, recorded("patched"))


def test_read_result_rejects_garbage(tmp_path):
    from gdbfault.machine.plugins import PluginResultError
    bad = tmp_path / "r.json"
    bad.write_text('{"backend": "plugin", "version": 1}')
    with pytest.raises(PluginResultError):
        read_kprofile_result(bad)
    with pytest.raises(PluginResultError):
        read_kprofile_result(tmp_path / "missing.json")


# ------------------------------------------------------------ end to end (QEMU)

def _need_plugin():
    from gdbfault.machine.plugins import plugin_library
    from gdbfault.machine.plugins import PluginUnavailable
    if not shutil.which("qemu-system-i386"):
        pytest.skip("qemu-system-i386 not installed")
    build = subprocess.run(["make", "-s", "-C", str(REPO / "qemu" / "plugin")], capture_output=True, text=True)
    try:
        plugin_library("kprofile")
    except PluginUnavailable as err:
        pytest.skip(f"kprofile plugin not built: {err} ({build.stderr.strip()[-200:]})")


@pytest.fixture(scope="module")
def profiles(lab_built):
    _need_plugin()
    return {v: run_profile(RunSpec(variant=v, iterations=ITERATIONS, call_chains=True))
            for v in ("vanilla", "patched")}


@pytest.mark.qemu
def test_profile_search_cost_vanilla_vs_patched(profiles, no_leaks):
    vanilla = {f["symbol"]: f for f in profiles["vanilla"]["functions"]}
    patched = {f["symbol"]: f for f in profiles["patched"]["functions"]}
    search = vanilla["search_exception_table"]
    assert search["inclusive"] == SEARCH_PER_ITERATION * ITERATIONS
    assert search["entries"] == profiles["vanilla"]["guest"]["sigsegv"] == ITERATIONS
    assert "search_exception_table" not in patched and "search_one_table" not in patched
    # the same fault path otherwise: every SIGSEGV is delivered by do_signal on both
    assert vanilla["do_signal"]["entries"] == patched["do_signal"]["entries"] == ITERATIONS


@pytest.mark.qemu
def test_profile_folded_frames(profiles, no_leaks):
    vanilla = render_profile(profiles["vanilla"], "folded")
    patched = render_profile(profiles["patched"], "folded")
    assert stack_has(vanilla, "do_page_fault", "search_exception_table")
    assert not stack_has(patched, "do_page_fault", "search_exception_table")
    # the SIGSEGV is delivered on the way out: do_signal called from signal_return
    assert "page_fault;signal_return;do_signal " in vanilla and "page_fault;signal_return;do_signal " in patched
    for p in profiles.values():
        assert p["stack"]["ret_mismatch"] == 0 and p["stack"]["to_user_unbalanced"] == 0


@pytest.mark.qemu
def test_profile_totals_account_for_guest_cycles(profiles, no_leaks):
    for variant, p in profiles.items():
        acc, total, guest = p["accounting"], p["total"], p["guest"]
        assert total["kernel"] + total["user"] == acc["counted"]
        # the window is the guest's own (its two rdtsc): what is left over is one
        # instruction per faulting block (the store before SIGSEGV and its retry)
        assert acc["left_early_blocks"] == 2 * guest["sigsegv"]
        assert acc["counted"] - acc["left_early_blocks"] == guest["cycles"], variant
        assert total["boot"] > 0 and total["setup"] > 0 and total["exit"] > 0


@pytest.mark.qemu
def test_profile_cli_folded_and_plot(lab_built, tmp_path, no_leaks):
    _need_plugin()
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    r = subprocess.run([sys.executable, "-m", "gdbfault", "profile", "--qemu", "--iterations", "30",
                        "--format", "folded", "--output", str(out), "--plot", str(png)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert stack_has(r.stdout, "do_page_fault", "search_exception_table")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.read_text())
    assert saved["schema"] == "gdbfault.profile/1" and saved["guest"]["iterations"] == 30


@pytest.mark.qemu
def test_profile_with_system_map_only(lab_built, tmp_path, no_leaks):
    """A kernel the user brings: no symbols in the image, only its System.map."""
    _need_plugin()
    stripped = tmp_path / "kernel-stripped.elf"
    subprocess.run(["objcopy", "--strip-all", str(KERNELS / "vanilla" / "kernel.elf"), str(stripped)], check=True)
    with pytest.raises(Exception, match="System.map"):
        kernel_functions(stripped)
    p = run_profile(RunSpec(kernel=str(stripped), system_map=str(KERNELS / "vanilla" / "System.map"),
                            iterations=50, call_chains=True))
    by_name = {f["symbol"]: f for f in p["functions"]}
    assert by_name["search_exception_table"]["inclusive"] == SEARCH_PER_ITERATION * 50
    assert p["accounting"]["exact"]


@pytest.mark.qemu
def test_profile_on_running_qemu_exits_2(no_leaks):
    for target in (["--port", "1234"], ["--pid", "1"], ["--socket", "/nonexistent"]):
        r = subprocess.run([sys.executable, "-m", "gdbfault", "profile", *target],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gdbfault: error: ")
        assert "plugin" in lines[0] and "running QEMU" in lines[0]


@pytest.mark.qemu
@pytest.mark.parametrize("backend", ["plugin", "gdb"])
def test_compare_profile_puts_the_search_on_top(lab_built, no_leaks, backend):
    """compare --profile: each kernel's profile comes from its counting run (the plugin
    backend's QEMU, or the GDB backend's recording), with call chains."""
    _need_plugin()
    r = subprocess.run([sys.executable, "-m", "gdbfault", "compare", "--profile", "--backend", backend,
                        "--iterations", "50", "--format", "json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    cmp = json.loads(r.stdout)
    rows = cmp["profile_changes"]["rows"]
    assert rows[0]["symbol"] == "search_exception_table"
    assert rows[0]["before"] == SEARCH_PER_ITERATION and rows[0]["after"] == 0
    for side in ("before", "after"):
        run = cmp[side]
        profile = run["kernel_profile"]
        assert profile["chains"] and "in the counting run" in profile["mode"]["backend"]
        assert profile["guest"] == run["guest"] and profile["accounting"]["exact"]
        # the profile's window is the guest's measured loop of that same run
        assert profile["accounting"]["guest_cycles"] == run["guest"]["cycles"]


def test_kernel_profile_refuses_a_live_patch():
    with pytest.raises(Exception, match="kernel profile"):
        validate_spec(RunSpec(kernel_profile=True, iterations=10, live_patch=LivePatchSpec("x.patch")))


@pytest.mark.qemu
def test_profile_guest_oops_exits_3_and_saves_counts(lab_built, tmp_path, no_leaks):
    _need_plugin()
    out = tmp_path / "oops.json"
    r = subprocess.run([sys.executable, "-m", "gdbfault", "profile", "--qemu", "--append", "labtest=oops",
                        "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "oops" in lines[0].lower() and str(out) in lines[0]
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["total"]["boot"] > 0
    # the oops hits at init's first system call: the measured loop never started
    assert saved["phase_reached"] == "setup" and saved["total"]["kernel"] == 0


@pytest.mark.qemu
def test_profile_runs_change_nothing(profiles, no_leaks):
    """Straight-line code attributed without a callback (the plugin's runs)
    gives exactly what a callback on every block gives."""
    every_block = run_profile(RunSpec(variant="vanilla", iterations=ITERATIONS, call_chains=True,
                                      profile_every_block=True))
    fast = profiles["vanilla"]
    assert every_block["folded"] == fast["folded"]
    assert every_block["functions"] == fast["functions"]
    assert every_block["total"]["kernel"] == fast["total"]["kernel"]
    assert every_block["accounting"] == fast["accounting"]


@pytest.mark.qemu
def test_profile_flat_equals_chains(profiles, no_leaks):
    """The default flat profile (inline counters, no call stack) gives the
    same instructions and entries per function, totals and accounting as the
    call-chain profile; only the boot's user count may differ (firmware)."""
    for variant in ("vanilla", "patched"):
        flat = run_profile(RunSpec(variant=variant, iterations=ITERATIONS))
        chained = profiles[variant]
        assert flat["chains"] is False and chained["chains"] is True and flat["folded"] == []
        assert [(f["symbol"], f["instructions"], f["entries"]) for f in flat["functions"]] == \
            [(f["symbol"], f["instructions"], f["entries"]) for f in chained["functions"]], variant
        assert all(f["inclusive"] is None for f in flat["functions"])
        assert {k: v for k, v in flat["total"].items() if k != "boot"} == \
            {k: v for k, v in chained["total"].items() if k != "boot"}
        assert flat["accounting"] == chained["accounting"] and flat["accounting"]["exact"]


def test_compare_profile_option_alone_or_with_a_probe_profile():
    from gdbfault.cli import KERNEL_PROFILE, build_parser
    parser = build_parser()
    assert parser.parse_args(["compare", "--profile"]).profile is KERNEL_PROFILE
    assert parser.parse_args(["compare", "--profile", "--iterations", "5"]).profile is KERNEL_PROFILE
    assert parser.parse_args(["compare", "--profile", "linux-2.2"]).profile == "linux-2.2"   # probe profile
    assert parser.parse_args(["compare"]).profile is None
