"""Ground truth: what the guest's own summary says each probe must have counted.

The workloads print `GDBFAULT-RESULT {json}` with the counts they caused
(SIGSEGVs caught, -EFAULT returns, fresh pages touched). On a kernel whose
fault path we know (the lab kernel, vanilla or patched), that fixes every
probe's hits exactly (qemu/README.md, "Ground truth"); on other kernels only
the rules that hold for every Linux are checked.
"""
import json
import re

from gdbfault.model.roles import ENTRY, RESOLVED, SEARCH, SIGNAL
from gdbfault.model.result import Check

__all__ = ["parse_guest_output", "expected_hits", "compare_with_guest", "check_counts"]

_RESULT = re.compile(r"^GDBFAULT-RESULT (\{.*\})\s*$", re.M)
_START = re.compile(r"^GDBFAULT-START (\{.*\})\s*$", re.M)
_PROGRESS = re.compile(r"^GDBFAULT-PROGRESS (\d+)/(\d+)\s*$", re.M)


def parse_guest_output(text):
    """{'result': dict|None, 'started': bool, 'progress': (done, total)|None}."""
    result = None
    m = None
    for m in _RESULT.finditer(text):
        pass
    if m:
        try:
            result = json.loads(m.group(1))
        except json.JSONDecodeError:
            result = None
    progress = None
    for p in _PROGRESS.finditer(text):
        progress = (int(p.group(1)), int(p.group(2)))
    return {"result": result, "started": bool(_START.search(text)), "progress": progress}


def expected_hits(guest, kernel_model):
    """role -> expected workload-phase hits, for the roles we can predict.

    kernel_model: 'lab-vanilla', 'lab-patched', or the profile name of
    another kernel, which gets the one rule every Linux keeps: one forced
    signal per SIGSEGV. (Real kernels also search the exception table for
    their own reasons — 6.1 does when a kernel-mode fault cannot take the
    mmap lock at once — so their search count is not predictable; whether a
    *user* fault searched it is read from the traced paths instead.)
    """
    sigsegv = int(guest.get("sigsegv", 0))
    efault = int(guest.get("efault", 0))
    pages = int(guest.get("demand_pages", 0))
    expected = {SIGNAL: sigsegv}
    if kernel_model in ("lab-vanilla", "lab-patched"):
        expected[SEARCH] = sigsegv + efault if kernel_model == "lab-vanilla" else efault
        expected[RESOLVED] = sigsegv + pages
        expected[ENTRY] = 2 * sigsegv + efault + pages
    return expected


def check_counts(counted, guest, kernel_model, skip_roles=()):
    """[Check] for every predictable role of `counted` [(role, symbol, workload hits)]."""
    if not guest:
        return []
    expected = expected_hits(guest, kernel_model)
    return [Check(role, symbol, expected[role], n, n == expected[role])
            for role, symbol, n in counted if role in expected and role not in skip_roles]


def compare_with_guest(probes, guest, kernel_model):
    """[Check] of each predictable probe's workload hits (result.Probe) against the guest's truth."""
    return check_counts([(p.role, p.symbol, p.hits.workload) for p in probes], guest, kernel_model)
