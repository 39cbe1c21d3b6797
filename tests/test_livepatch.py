"""Live patching: the seed's patch applied to the running lab kernel, in one boot.

Building and linking run the real compiler and linker on the lab kernel's
sources; the end-to-end tests use real QEMU, GDB and the vanilla lab kernel
under record/replay, and check every count against the guest's own truth.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from gdbfault.livepatch.build import jmp_rel32, prepare_live_patch
from gdbfault.base.locations import lab_kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.path.join(REPO, "qemu", "kernel", "patches", "0001-user-faults-skip-exception-table.patch")
ITERATIONS, AT = 40, 20


def run_cli(*args, tmpdir, timeout=300):
    env = dict(os.environ, TMPDIR=str(tmpdir))
    return subprocess.run([sys.executable, "-m", "gdbfault", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def one_line_error(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdbfault: error:"), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def instructions(disassembly):
    """Mnemonics and operands of objdump -d lines; kernel addresses (call and
    jump targets, string constants) left out: they differ by placement."""
    out = []
    for line in disassembly.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].strip():
            insn = parts[2].split("<")[0].strip()
            insn = re.sub(r"^(call|j\w+)\s+\S+$", r"\1", insn)
            out.append(re.sub(r"0xc0[0-9a-f]{6}", "ADDR", insn))
    return out


def compile_object(tmp_path, source, name="repl.o"):
    src = tmp_path / (name + ".c")
    src.write_text(source)
    obj = tmp_path / name
    subprocess.run(["gcc", "-m32", "-O2", "-ffreestanding", "-fno-pic", "-fno-asynchronous-unwind-tables",
                    "-c", "-o", str(obj), str(src)], check=True)
    return obj


# -- building ------------------------------------------------------------------

def test_seed_patch_builds_the_patched_kernels_do_page_fault(lab_built, tmp_path):
    kernel, _ = lab_kernel("vanilla")
    patch = prepare_live_patch(SEED, kernel, None, "vanilla")
    assert [f.name for f in patch.functions] == ["do_page_fault"]     # only the function whose code changed
    f = patch.functions[0]
    start, end = patch.area
    assert start <= patch.code_address and patch.code_address + len(patch.code) <= end
    assert start <= f.new < end
    writes = patch.writes()
    assert writes[0] == (patch.code_address, patch.code)
    assert writes[1] == (f.old, jmp_rel32(f.old, f.new))
    assert f.old + 5 + int.from_bytes(writes[1][1][1:], "little", signed=True) == f.new
    # the replacement is the patched build's do_page_fault, instruction for instruction
    blob = tmp_path / "new.bin"
    off = f.new - patch.code_address
    blob.write_bytes(patch.code[off:off + f.size])
    ours = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386", f"--adjust-vma={f.new:#x}", str(blob)],
                          capture_output=True, text=True, check=True).stdout
    patched_kernel, _ = lab_kernel("patched")
    theirs = subprocess.run(["objdump", "-d", "--disassemble=do_page_fault", str(patched_kernel)],
                            capture_output=True, text=True, check=True).stdout
    assert instructions(ours) == instructions(theirs) and len(instructions(ours)) > 50


def test_object_replacement_links_against_the_kernel(lab_built, tmp_path):
    kernel, system_map = lab_kernel("vanilla")
    obj = compile_object(tmp_path, "struct task;\nextern void force_sig(int, struct task *);\n"
                                   "static int calls;\n"
                                   "void do_page_fault(void *regs, unsigned long e) { calls++; force_sig(11, 0); }\n")
    patch = prepare_live_patch(obj, kernel, system_map, None)       # System.map only
    assert [f.name for f in patch.functions] == ["do_page_fault"]
    # the new function's own static lives in the area (an object brings its own data)
    assert len(patch.code) > patch.functions[0].size


def test_check_specs_name_before_and_after_metrics():
    from gdbfault.analysis.metrics import parse_ref, phase_view, resolve
    assert parse_ref("live.before.per_iteration.force_sig", ["live"]) == \
        ("live", "phase", ("before", "per_iteration", ("force_sig",)))
    assert parse_ref("live.after.path.user-signal.median", ["live"])[2] == ("after", "path", ("user-signal", "median"))
    with pytest.raises(ValueError, match="whole-run metric"):
        parse_ref("live.after.guest.sigsegv", ["live"])
    from gdbfault.model.result import Hits, Kernel, LivePatch, Mode, Phase, Probe, RunResult, Tool, Workload
    run = RunResult(tool=Tool(), kernel=Kernel("k"), workload=Workload(), mode=Mode(),
                    probes=[Probe("signal forced", "force_sig", 0xC0100000, hits=Hits(0, 10))],
                    live_patch=LivePatch(before=Phase(4, {"force_sig": 4}, {"force_sig": 1.0}),
                                         after=Phase(6, {"force_sig": 6}, {"force_sig": 1.0})))
    assert resolve(run, "phase", ("after", "hits", ("signal forced",))) == 6
    assert resolve(run, "phase", ("before", "iterations", ())) == 4
    assert phase_view(run, "after_unpatch") is None
    run.live_patch = None
    assert phase_view(run, "before") is None


# -- bad input: one line, exit 2, nothing booted or left behind -------------------

def _bad(tmp_path, *args):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    r = run_cli("attach", "--qemu", "--iterations", str(ITERATIONS), *args, tmpdir=tmpdir)
    assert r.returncode == 2, r.stderr
    assert list(tmpdir.iterdir()) == [], "temporary files left behind"
    return r


def test_patch_that_does_not_apply(lab_built, no_leaks, tmp_path):
    r = _bad(tmp_path, "--variant", "patched", "--live-patch", SEED)       # already applied there
    one_line_error(r, "the patch does not apply to the lab kernel (patched)")


def test_not_a_patch(lab_built, no_leaks, tmp_path):
    junk = tmp_path / "junk.patch"
    junk.write_text("hello\n")
    one_line_error(_bad(tmp_path, "--live-patch", str(junk)), "is not a patch")


def test_a_patch_of_a_file_the_kernel_has_not_is_one_clean_line(lab_built, no_leaks, tmp_path):
    """patch(1) quotes the patch when it finds no file; the error was its "The text leading up to this was:"."""
    other = tmp_path / "other.patch"
    other.write_text("--- a/nosuch.c\n+++ b/nosuch.c\n@@ -1,2 +1,2 @@\n int a;\n-int b;\n+int c;\n")
    r = _bad(tmp_path, "--live-patch", str(other))
    one_line_error(r, "the patch changes nosuch.c, which the lab kernel (vanilla) does not have")
    assert "leading up to" not in r.stderr


def test_object_with_an_unresolvable_symbol(lab_built, no_leaks, tmp_path):
    obj = compile_object(tmp_path, "extern int no_such_kernel_symbol(void);\n"
                                   "int do_page_fault(void) { return no_such_kernel_symbol(); }\n")
    one_line_error(_bad(tmp_path, "--live-patch", str(obj)),
                   "undefined symbol 'no_such_kernel_symbol' that the kernel's map cannot resolve")


def test_replacement_for_a_function_that_does_not_exist(lab_built, no_leaks, tmp_path):
    obj = compile_object(tmp_path, "int no_such_function(void) { return 0; }\n")
    one_line_error(_bad(tmp_path, "--live-patch", str(obj)),
                   "replaces 'no_such_function', a function that does not exist")


def test_no_free_room_in_guest_memory(lab_built, no_leaks, tmp_path):
    obj = compile_object(tmp_path, "const char table[20000] = {1};\n"
                                   "int do_page_fault(int i) { return table[i]; }\n")
    one_line_error(_bad(tmp_path, "--live-patch", str(obj)), "no free room in guest memory", "20")


def test_patch_at_beyond_iterations(lab_built, no_leaks, tmp_path):
    one_line_error(_bad(tmp_path, "--live-patch", SEED, "--patch-at", str(ITERATIONS + 1)),
                   f"--patch-at {ITERATIONS + 1} is beyond --iterations {ITERATIONS}")


def test_unpatch_at_not_after_patch_at(lab_built, no_leaks, tmp_path):
    one_line_error(_bad(tmp_path, "--live-patch", SEED, "--patch-at", "20", "--unpatch-at", "20"),
                   "--unpatch-at 20 must be after --patch-at 20")


# -- the patch event under record/replay ---------------------------------------

def _hits(phase):
    return phase["hits"]


def _path(phase, shape):
    """The path row of this shape in a live patch's phase (result.Phase), or None."""
    return next((p for p in phase.paths or [] if p.shape == shape), None)


@pytest.mark.qemu
def test_seed_patch_in_one_boot_under_record_replay(lab_built, no_leaks, tmp_path):
    from gdbfault.model.paths import RESOLVED_SHAPE, USER_SEARCH_SIGNAL, USER_SIGNAL
    from gdbfault.model.result import as_result
    from gdbfault.runs.booted import run_qemu
    from gdbfault.model.spec import RunSpec
    out = tmp_path / "run.json"
    r = run_cli("attach", "--qemu", "--iterations", str(ITERATIONS), "--live-patch", SEED,
                "--patch-at", str(AT), "-q", "--output", str(out), "--plot", str(tmp_path / "t.png"),
                tmpdir=tmp_path)
    assert r.returncode == 0, r.stderr
    run = as_result(json.loads(out.read_text()))
    lp = run.live_patch
    assert not list(tmp_path.glob("gdbfault-*")), "temporary folders left behind"
    # the timeline: the search line falls to zero at the patch
    assert (tmp_path / "t.png").stat().st_size > 10000
    tl = lp.timeline
    window_of_patch = (lp.icount - tl["start"]) // tl["width"]
    assert sum(tl["hits"]["exception search"][:window_of_patch]) > 0
    assert sum(tl["hits"]["exception search"][window_of_patch + 1:]) == 0
    assert sum(tl["hits"]["signal forced"][window_of_patch + 1:]) > 0
    f = lp.functions[0]
    assert re.search(rf"live patch: do_page_fault → {f['new']:#x} \(\d+ bytes at {lp.code['address']:#x}\), "
                     rf"at iteration {AT} \(guest instruction [\d,]+\)", r.stdout), r.stdout
    before, after = lp.before, lp.after
    assert before.iterations == AT and after.iterations == ITERATIONS - AT
    # the seed's claim, in one boot: 1.00 search per user fault before, 0.00 after
    assert before.per_iteration["search_exception_table"] == 1.0
    assert after.per_iteration["search_exception_table"] == 0.0
    for phase in (before, after):
        assert phase.hits["do_page_fault"] == 2 * phase.iterations
        assert phase.hits["force_sig"] == phase.hits["handle_mm_fault"] == phase.iterations
        assert phase.checks and all(c.ok for c in phase.checks)
    # before + after = the run's totals, and the totals match the guest's own summary
    for p in run.probes:
        assert before.hits[p.symbol] + after.hits[p.symbol] == p.hits.workload
    assert run.guest["sigsegv"] == ITERATIONS and run.checks_ok
    # paths: the vanilla user-signal path before; after it, the patched kernel's plus the jmp
    assert _path(before, USER_SEARCH_SIGNAL).count == AT and _path(before, USER_SIGNAL) is None
    assert _path(after, USER_SEARCH_SIGNAL) is None and _path(after, USER_SIGNAL).count == ITERATIONS - AT
    patched = run_qemu(RunSpec(variant="patched", iterations=10))       # the rebuilt patched kernel
    rebuilt = patched.path(USER_SIGNAL).median
    assert _path(after, USER_SIGNAL).median == _path(after, USER_SIGNAL).p95 == rebuilt + 1
    assert _path(after, RESOLVED_SHAPE).median == _path(before, RESOLVED_SHAPE).median + 1
    # the recording and the replay ran the same code: same count at fixed points
    c = lp.consistency
    assert c["same"] and c["record_icount_at_end"] == c["replay_icount_at_end"]
    assert c["record_icount_at_patch"] == c["replay_icount_at_patch"] == lp.icount
    # the one stop's effect on the guest's clock is measured, not hidden
    t = lp.timing
    assert t["guest_cycles"] == run.guest["cycles"] and t["extra_cycles"] == t["guest_cycles"] - t["instructions"]
    assert "guest timing:" in r.stdout and "record and replay agree" in r.stdout
    # the seed's claim in one boot, as a check spec over this run
    chk = run_cli("check", "qemu/checks/seed-live-patch.toml", "--use", f"live={out}", tmpdir=tmp_path)
    assert chk.returncode == 0 and "6 passed, 0 failed" in chk.stdout, chk.stdout + chk.stderr


@pytest.mark.qemu
def test_a_replay_without_the_write_is_caught(lab_built, no_leaks, tmp_path, monkeypatch):
    """The replay prints the recorded summary even if it skips the write (FACTS.md):
    the instruction count at the workload's end must catch it."""
    from gdbfault.livepatch import hooks as livepatch_run
    from gdbfault.base.errors import RunFailed
    from gdbfault.runs.booted import run_qemu
    from gdbfault.model.spec import LivePatchSpec, RunSpec
    real_arm = livepatch_run.arm

    def arm_without_writes(dbg, plan_path, points, qmp_socket, timing=True):
        if timing:            # the replay (the recording arms with timing=False)
            empty = tmp_path / "empty-plan.json"
            empty.write_text(json.dumps({"writes": [], "functions": [], "entries": []}))
            plan_path = empty
        real_arm(dbg, plan_path, points, qmp_socket, timing)
    monkeypatch.setattr(livepatch_run, "arm", arm_without_writes)
    spec = RunSpec(iterations=ITERATIONS, live_patch=LivePatchSpec(SEED, AT), timeout_s=240)
    with pytest.raises(RunFailed) as failed:
        run_qemu(spec)
    assert "the replay diverged from the recording" in str(failed.value)
    assert failed.value.exit_code == 2


@pytest.mark.qemu
def test_patch_at_zero_live(lab_built, no_leaks, tmp_path):
    from gdbfault.model.spec import LivePatchSpec
    from gdbfault.runs.booted import run_qemu
    from gdbfault.model.spec import RunSpec
    run = run_qemu(RunSpec(iterations=10, replay=False, trace=False, live_patch=LivePatchSpec(SEED, 0)))
    lp = run.live_patch
    assert lp.applied and lp.before.iterations == 0
    assert all(n == 0 for n in lp.before.hits.values())
    assert lp.after.hits["search_exception_table"] == 0 and lp.after.hits["force_sig"] == 10
    assert run.checks_ok


@pytest.mark.qemu
def test_plugin_backend_gdb_connects_only_to_patch(lab_built, no_leaks):
    """--backend plugin: the plugin counts, GDB only applies the patch at the mark."""
    from gdbfault.machine import plugins as plugin_backend
    from gdbfault.model.spec import LivePatchSpec
    from gdbfault.model.paths import USER_SEARCH_SIGNAL, USER_SIGNAL
    from gdbfault.runs.booted import run_qemu
    from gdbfault.model.spec import RunSpec
    try:
        plugin_backend.plugin_library()
    except plugin_backend.PluginUnavailable as err:
        pytest.skip(f"plugin not built: {err}")
    n, at = 2000, 1000
    run = run_qemu(RunSpec(backend="plugin", iterations=n, live_patch=LivePatchSpec(SEED, at)))
    lp = run.live_patch
    assert lp.applied and lp.at_iteration == at
    assert lp.before.per_iteration["search_exception_table"] == 1.0
    assert lp.after.per_iteration["search_exception_table"] == 0.0
    assert run.checks_ok and any(c.phase == "after" for c in run.checks)
    for p in run.probes:
        assert lp.before.hits[p.symbol] + lp.after.hits[p.symbol] == p.hits.workload
    assert _path(lp.before, USER_SEARCH_SIGNAL).count == at
    assert _path(lp.after, USER_SIGNAL).count == n - at
    assert _path(lp.after, USER_SIGNAL).median == _path(lp.after, USER_SIGNAL).max


@pytest.mark.qemu
def test_attach_patches_at_once_and_never_leaves_the_kernel_patched(lab_built, no_leaks, tmp_path):
    """--pid attach: the patch goes in at once (no CPU in do_page_fault), the
    counts split there, and detaching puts the old entry back unless --keep-patch."""
    from gdbfault.base.locations import lab_kernel, workload_binary
    from gdbfault.machine.qemu import Machine, MachineConfig
    kernel, _ = lab_kernel("vanilla")
    entry = next(int(line.split()[0], 16) for line in
                 open(str(kernel).replace("kernel.elf", "System.map")) if line.endswith(" do_page_fault\n"))

    def entry_bytes(m):
        out = subprocess.run(["gdb", "-batch", "-nx", "-ex", "set architecture i386",
                              "-ex", f"target remote {m.gdb_socket}", "-ex", f"x/5xb {entry:#x}",
                              "-ex", "detach"], capture_output=True, text=True, timeout=60).stdout
        line = next(line for line in out.splitlines() if line.startswith(f"{entry:#x}"))
        return bytes(int(w, 16) for w in re.findall(r"\b0x([0-9a-f]{2})\b", line.split(":", 1)[1])[:5])

    with Machine(MachineConfig(kernel=kernel, initrd=[workload_binary("mprotect")],
                               append="iterations=50000000", halted=False, icount=False)) as m:
        m.start()
        deadline = time.monotonic() + 60         # kernel addresses are mapped once the workload runs
        while "GDBFAULT-START" not in m.serial_output() and time.monotonic() < deadline:
            time.sleep(0.2)
        original = entry_bytes(m)
        assert original[0] != 0xE9
        out = tmp_path / "run.json"
        r = run_cli("attach", "--pid", str(m.pid), "--duration", "2", "--live-patch", SEED, "-o", str(out),
                    tmpdir=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "live patch: do_page_fault → " in r.stdout and "at once on attaching" in r.stdout
        lp = json.loads(out.read_text())["live_patch"]
        assert lp["applied"] and lp["unpatched"]
        assert lp["after"]["hits"]["force_sig"] > 0 and lp["after"]["hits"]["search_exception_table"] == 0
        assert entry_bytes(m) == original                    # put back on detaching
        r = run_cli("attach", "--pid", str(m.pid), "--duration", "1", "--live-patch", SEED, "--keep-patch",
                    tmpdir=tmp_path)
        assert r.returncode == 0 and "left patched (--keep-patch)" in r.stdout, r.stderr
        kept = entry_bytes(m)
        assert kept[0] == 0xE9 and entry + 5 + int.from_bytes(kept[1:], "little", signed=True) == \
            lp["functions"][0]["new"]
        assert m.poll() is None                              # the guest runs on, patched


@pytest.mark.qemu
def test_unpatch_at_puts_the_old_entry_back_under_record_replay(lab_built, no_leaks):
    from gdbfault.model.spec import LivePatchSpec
    from gdbfault.model.paths import USER_SEARCH_SIGNAL, USER_SIGNAL
    from gdbfault.runs.booted import run_qemu
    from gdbfault.model.spec import RunSpec
    run = run_qemu(RunSpec(iterations=30, live_patch=LivePatchSpec(SEED, 10, 20)))
    assert "mark=10 mark2=20" in run.workload.command_line
    lp = run.live_patch
    assert lp.applied and lp.unpatched and lp.unpatch_icount > lp.icount
    search = [ph.per_iteration["search_exception_table"] for _, ph in lp.phases()]
    assert search == [1.0, 0.0, 1.0]
    assert _path(lp.after_unpatch, USER_SEARCH_SIGNAL).median == _path(lp.before, USER_SEARCH_SIGNAL).median
    assert _path(lp.after_unpatch, USER_SIGNAL) is None
    assert run.checks_ok and any(c.phase == "after_unpatch" for c in run.checks)
    assert lp.consistency["same"]
