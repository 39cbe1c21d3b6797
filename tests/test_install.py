"""An installed gdbfault runs the main job with no checkout in sight.

Builds a wheel of this tree (setup.py packages the built lab kernels,
workloads, probe engine and plugin), installs it into a fresh venv, and runs
`gdbfault attach --qemu` from an unrelated directory with PYTHONPATH unset:
the counts must match the guest's own summary, and every file the run used
must come from the installed package.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.qemu, pytest.mark.install]


def _wheel_command(out_dir):
    """pip wheel; offline when setuptools can make wheels here (the `wheel`
    package, or setuptools >= 70.1), else in pip's isolated build env (PyPI)."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
           "-q", "-w", str(out_dir), str(REPO)]
    if importlib.util.find_spec("wheel") or importlib.util.find_spec("setuptools.command.bdist_wheel"):
        cmd.insert(4, "--no-build-isolation")
    return cmd


@pytest.fixture(scope="module")
def installed(tmp_path_factory, lab_built):
    """(venv bin dir, wheel path) with this tree's wheel installed in a fresh venv."""
    root = tmp_path_factory.mktemp("install")
    built = subprocess.run(_wheel_command(root / "dist"), capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = (root / "dist").glob("gdbfault-*.whl")
    # The venv sees the system's site-packages for the dependencies (pygdbmi,
    # qemu.qmp, ...): no network needed. Our wheel is installed into the venv
    # itself, so it comes first on sys.path, ahead of any gdbfault outside.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv")],
                   check=True, timeout=120, env=_clean_env())
    bin_dir = root / "venv" / "bin"
    # --ignore-installed: a gdbfault seen outside the venv (an editable
    # install, say) must not count as "already satisfied".
    subprocess.run([str(bin_dir / "pip"), "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=300, env=_clean_env())
    return bin_dir, wheel


def _clean_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)          # the checkout must not leak in
    return env


def test_the_wheel_carries_the_built_parts(installed):
    import zipfile
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("gdbfault/_data/gdbscripts/faultprobe.py", "gdbfault/_data/gdbscripts/faultcard.py",
                   "gdbfault/_data/qemu/kernel/build/vanilla/kernel.elf",
                   "gdbfault/_data/qemu/kernel/build/vanilla/System.map",
                   "gdbfault/_data/qemu/kernel/build/patched/kernel.elf",
                   "gdbfault/_data/qemu/kernel/build/broken/kernel.elf",
                   "gdbfault/_data/qemu/workloads/build/mprotect.elf",
                   "gdbfault/kernels/profiles/lab.toml"):
        assert needed in names, f"{needed} is not in {wheel.name}"


def test_installed_gdbfault_runs_the_main_job_from_anywhere(installed, tmp_path, no_leaks):
    bin_dir, _ = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(bin_dir / "python"), "-c", "import gdbfault; print(gdbfault.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=_clean_env(), check=True)
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(bin_dir.parent), f"imported {package}, not the venv's copy"

    done = subprocess.run([str(bin_dir / "gdbfault"), "attach", "--qemu", "--iterations", "20",
                           "--output", "run.json"],
                          capture_output=True, text=True, cwd=elsewhere, env=_clean_env(), timeout=300)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    run = json.loads((elsewhere / "run.json").read_text())
    assert Path(run["kernel"]["path"]).is_relative_to(package)
    assert run["run"]["complete"]
    assert run["guest"]["iterations"] == 20 and run["guest"]["sigsegv"] == 20
    hits = {p["role"]: p["hits"]["workload"] for p in run["probes"]}
    assert hits == {"fault entry": 40, "exception search": 20, "signal forced": 20,
                    "fault resolved": 20}
    assert run["checks"] and all(c["ok"] for c in run["checks"]), run["checks"]
    assert "counts match the guest's own summary" in done.stdout
