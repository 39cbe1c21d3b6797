"""End-to-end: `gdbfault compare` and `gdbfault check` with real QEMU, GDB and lab kernels.

About two minutes on two cores: compare at 300 iterations (both kernels in
parallel), the seed spec at 1000, and the broken spec (its vanilla run is
taken from the seed check's saved runs, so only the broken kernel boots).
"""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parent.parent
CHECKS = REPO / "qemu" / "checks"
BROKEN_ELF = REPO / "qemu" / "kernel" / "build" / "broken" / "kernel.elf"


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gdbfault", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("check-runs")


def _row(out, metric):
    line = next(l for l in out.splitlines() if l.startswith(metric))
    return line[len(metric):].split()


def test_compare_prints_before_after_table(lab_built, no_leaks, tmp_path):
    out_json = tmp_path / "cmp.json"
    proc = run_cli("compare", "--iterations", "300", "--output", str(out_json))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert _row(out, "search_exception_table / iter")[:3] == ["1.00", "0.00", "−1.00"]
    assert _row(out, "force_sig / iter")[:3] == ["1.00", "1.00", "0"]
    med = _row(out, "user-signal path, median insns")
    assert int(med[1]) < int(med[0])
    cyc = _row(out, "cycles / iteration")
    assert int(cyc[1]) < int(cyc[0]) and float(cyc[-1]) < 1.0
    import json
    cmp = json.loads(out_json.read_text())
    # our figures beside the seed's: the measured cycles of this very run
    ours = [cmp[side]["guest"]["cycles_per_iteration"] for side in ("before", "after")]
    assert f"here: cycles/iteration {ours[0]} → {ours[1]}, −" in out and "· seed, 1997 (" in out
    assert cmp["schema"] == "gdbfault.compare/1"
    assert cmp["before"]["kernel"]["variant"] == "vanilla" and cmp["after"]["kernel"]["variant"] == "patched"


def test_seed_check_passes_and_junit_parses(lab_built, no_leaks, tmp_path, saved_runs):
    junit = tmp_path / "out.xml"
    spec = CHECKS / "seed-patch.toml"
    proc = run_cli("check", str(spec), "--junit", str(junit), "--save-runs", str(saved_runs))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n = sum(1 for line in spec.read_text().splitlines() if line.strip() == "[[expect]]")
    assert f"{n} passed, 0 failed" in proc.stdout
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuite" and len(root.findall("testcase")) == n
    assert root.get("failures") == "0" and not root.findall("testcase/failure")


def test_malformed_spec_exits_2_naming_the_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((CHECKS / "seed-patch.toml").read_text().replace('op = "<="', 'op = "=<"'))
    line = next(i for i, l in enumerate(bad.read_text().splitlines(), 1) if l == 'op = "=<"')
    proc = run_cli("check", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"gdbfault: error: {bad}:{line}:") and "key 'op'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_broken_build_fails_the_seed_claims(lab_built, no_leaks, tmp_path, saved_runs):
    # lab_built has run make in qemu/kernel, which builds every variant: a
    # missing broken kernel is a failure here, never a silent skip.
    assert BROKEN_ELF.is_file(), f"{BROKEN_ELF} was not built by `make -C qemu/kernel`"
    junit = tmp_path / "broken.xml"
    args = ["check", str(CHECKS / "seed-patch-broken.toml"), "--junit", str(junit)]
    if (saved_runs / "vanilla.json").is_file():          # from the seed check: boot only broken
        args += ["--use", f"vanilla={saved_runs / 'vanilla.json'}"]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert " ✗ broken: user faults never reach the exception search" in proc.stdout
    assert " ✗ broken: cheaper per iteration than vanilla" in proc.stdout
    assert " ✓ broken: every user fault still raises SIGSEGV" in proc.stdout
    root = ET.parse(junit).getroot()
    failures = [c.get("name") for c in root.findall("testcase") if c.find("failure") is not None]
    assert "broken: user faults never reach the exception search" in failures
    assert int(root.get("failures")) == len(failures) >= 2
