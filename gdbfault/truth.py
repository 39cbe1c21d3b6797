"""Ground truth: what the guest's own summary says each probe must have counted.

The workloads print `GDBFAULT-RESULT {json}` with the counts they caused
(SIGSEGVs caught, -EFAULT returns, fresh pages touched). On a kernel whose
fault path we know (the lab kernel, vanilla or patched), that fixes every
probe's hits exactly (qemu/README.md, "Ground truth"); on other kernels only
the rules that hold for every Linux are checked.
"""
import json
import re

from gdbfault.profiles import ENTRY, RESOLVED, SEARCH, SIGNAL

__all__ = ["parse_guest_output", "expected_hits", "compare_with_guest"]

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


def compare_with_guest(probes, guest, kernel_model):
    """[{role, symbol, expected, counted, ok}] for every predictable probe."""
    if not guest:
        return []
    expected = expected_hits(guest, kernel_model)
    rows = []
    for p in probes:
        if p["role"] in expected:
            counted = p["hits"]["workload"]
            rows.append({"role": p["role"], "symbol": p["symbol"], "expected": expected[p["role"]],
                         "counted": counted, "ok": counted == expected[p["role"]]})
    return rows
