"""The in-GDB probe engine itself (gdbscripts/faultprobe.py), in a real GDB at a real stop."""
import pytest

from conftest import gdb_on_lab
from gdbfault.base.locations import GDBSCRIPTS

pytestmark = pytest.mark.qemu

SCRIPT = r'''
import gdb
gdb.execute("source %(script)s")
gdb.execute('faultprobe add "fault entry" do_page_fault')
gdb.execute("break do_page_fault", to_string=True)   # a user breakpoint: stop here once
gdb.execute("continue", to_string=True)
bp = ENGINE.probes[0]
first = ENGINE.is_duplicate(bp)          # the probe's own stop() already ran once
again = ENGINE.is_duplicate(bp)          # same breakpoint, same registers, no progress known
ENGINE.note_icount(100)                  # as the path tracer does at an entry or return
ENGINE.icount_reader = lambda: 107
moved = ENGINE.is_duplicate(bp)          # same registers, but the guest executed instructions
ENGINE.note_icount(107)
ENGINE.icount_reader = lambda: 107
still = ENGINE.is_duplicate(bp)          # the instruction count did not move: a duplicate
print("RESULT", first, again, moved, still, bp.hits["workload"], bp.duplicates)
gdb.execute("faultprobe stats")
'''


def test_duplicate_reports_are_spotted_by_registers_and_icount(lab_built, no_leaks):
    out, _ = gdb_on_lab(SCRIPT % {"script": GDBSCRIPTS / "faultprobe.py"})
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    # The probe counted its hit; asking again at the same stop is a duplicate,
    # unless the previous stop's instruction count is known and has moved.
    assert line.split()[1:] == ["True", "True", "False", "True", "1", "0"]
    assert "fault entry" in out and "do_page_fault" in out


NESTING = r'''
import gdb
gdb.execute("source %(script)s")
gdb.execute('faultprobe add "fault entry" do_page_fault')
gdb.execute('faultprobe add "exception search" search_exception_table')
gdb.execute("break do_page_fault", to_string=True)
gdb.execute("continue", to_string=True)
gdb.execute("faultprobe trace")                  # no QMP: shapes only
tracer = ENGINE.tracer
tracer.reset()
real_esp = int(gdb.parse_and_eval("$sp"))
esp = [real_esp]
_reg = lambda name, _r=_reg: esp[0] if name == _SP else _r(name)   # programmed stack pointer
globals()["_reg"] = _reg
def enter(at): esp[0] = at; tracer.enter()
def leave(at): esp[0] = at + 4; tracer.leave()
outer, inner = real_esp, real_esp - 0x40        # a fault taken inside the handler runs deeper
enter(outer); tracer.event("exception search")
enter(inner); tracer.event("fault resolved"); leave(inner)
tracer.event("signal forced"); leave(outer)
enter(outer); enter(inner); leave(outer)         # the inner return was never seen
print("RESULT", sorted((tuple(p["events"]), p["count"]) for p in tracer.snapshot()["paths"]),
      tracer.lost, len(tracer.stack))
'''


def test_tracer_nests_faults_and_matches_returns_by_stack(lab_built, no_leaks):
    out, err = gdb_on_lab(NESTING % {"script": GDBSCRIPTS / "faultprobe.py"})
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), err[-500:])
    # outer path keeps its own events around the nested one; the lost inner return is counted
    assert line == ("RESULT [((), 1), (('exception search', 'signal forced'), 1), "
                    "(('fault resolved',), 1)] 1 0"), line


DEDUP = r'''
import gdb
gdb.execute("source %(script)s")
gdb.execute('faultprobe add "fault entry" do_page_fault')
gdb.execute("break do_page_fault", to_string=True)   # a user breakpoint: stop here once
gdb.execute("continue", to_string=True)
bp = ENGINE.probes[0]
bp.stop()                                # the same stop reported again: filtered
filtered = (bp.hits["workload"], bp.duplicates)
gdb.execute("faultprobe dedup off")      # as gdbfault does in a replay
bp.stop()
bp.stop()                                # no filter: every report counts
unfiltered = (bp.hits["workload"], bp.duplicates)
print("RESULT", filtered, unfiltered, ENGINE.snapshot()["dedup"])
try:
    gdb.execute("faultprobe dedup maybe")
except gdb.error as exc:
    print("ERROR", exc)
'''


def test_the_duplicate_filter_can_be_turned_off(lab_built, no_leaks):
    out, err = gdb_on_lab(DEDUP % {"script": GDBSCRIPTS / "faultprobe.py"})
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), err[-500:])
    assert line == "RESULT (1, 1) (3, 1) False", line
    assert "ERROR usage: faultprobe dedup on|off" in out


ICOUNT = r'''
import gdb
gdb.execute("source %(script)s")
gdb.execute("break do_page_fault", to_string=True)
gdb.execute("continue", to_string=True)
readers = [icount_reader("monitor"), icount_reader("%(qmp)s")]
before = [read() for read in readers]
gdb.execute("stepi 5", to_string=True)
after = [read() for read in readers]
print("RESULT", before[0] == before[1] > 0, [b - a for a, b in zip(before, after)])
'''


def test_icount_through_the_gdbstub_equals_qmp(lab_built, no_leaks):
    """In record/replay, the tracer reads the instruction count through the
    gdbstub (`monitor info replay`, ten times cheaper than QMP): the same count."""
    out, err = gdb_on_lab(ICOUNT.replace("%(script)s", str(GDBSCRIPTS / "faultprobe.py")), record=True)
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), err[-500:])
    assert line == "RESULT True [5, 5]", line


NO_RR = r'''
import gdb
gdb.execute("source %(script)s")
print("QMP", icount_reader("%(qmp)s")() >= 0)
try:
    icount_reader("monitor")()
except gdb.GdbError as exc:
    print("ERROR", exc)
'''


def test_icount_through_the_gdbstub_needs_record_replay(lab_built, no_leaks):
    """Without record/replay QEMU's monitor gives no count: QMP reads it (one line says why otherwise)."""
    out, err = gdb_on_lab(NO_RR.replace("%(script)s", str(GDBSCRIPTS / "faultprobe.py")))
    assert "QMP True" in out, err[-500:]
    assert "needs QEMU under rr=record or rr=replay" in out
