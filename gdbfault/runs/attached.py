"""A run on a QEMU gdbfault did not start: `gdbfault attach --port/--socket/--pid`.

The run resolves like any other (backends/plan.py: kernel, symbols, probe
profile, probes), then counts on the running guest until --duration or
Ctrl-C (backends/running_qemu.py) and detaches, leaving it running as it
was. GDB's architecture follows the running emulator (qemu-system-x86_64
sends 64-bit registers), and a kernel it cannot run is refused first; before
any probe is set, the running kernel is checked against the kernel file and its
System.map (its `linux_banner`, the code at every probe: kernels/identity.py). A live
patch goes in at once and comes out before detaching (livepatch/hooks.PatchNow),
unless the user keeps it.
"""
import dataclasses

from gdbfault.backends.hooks import RunHooks
from gdbfault.backends.plan import resolve_run
from gdbfault.backends.running_qemu import attached_result, check_reachable, count_on_running, describe_qemu, \
    qemu_process, qmp_of_process
from gdbfault.kernels.arch import resolve_arch
from gdbfault.livepatch.hooks import PatchNow
from gdbfault.machine.rescue import qmp_status

__all__ = ["attach_running"]


def attach_running(spec, address, pid=None, duration=None, live_patch=None, keep_patch=False, qmp=None):
    """Count on the QEMU whose gdbstub is at `address` ('host:port' or a unix socket path; `pid`:
    the QEMU's, when known) for `duration` seconds or until Ctrl-C; the RunResult.
    `spec` names the kernel and its probes (its workload options are not used: the guest runs what it runs);
    `live_patch`: a file applied at once, taken out before detaching unless `keep_patch`;
    `qmp`: a QMP socket of that QEMU (default: found on its command line), to leave its guest as found."""
    plan = resolve_run(dataclasses.replace(spec, workload=None, live_patch=None))
    hooks = PatchNow(plan, live_patch, keep_patch) if live_patch else RunHooks()
    try:
        proc = qemu_process(address, pid)
        facts = describe_qemu(proc)
        if facts["binary"] is not None:
            # GDB's registers are the running emulator's; an x86_64 kernel given for a
            # qemu-system-i386 is refused here, before GDB connects
            plan.arch = resolve_arch(plan.kernel, plan.arch.kernel, qemu=facts["binary"])
        qmp = qmp or qmp_of_process(proc)
        found = qmp_status(qmp)            # before anything touches it: how to leave it
        check_reachable(address, resume=found in (None, "running"))
        plan.result = attached_result(plan, address, facts)
        if proc is not None:
            plan.result.workload.qemu_pid = proc.pid
        return count_on_running(plan, address, hooks, duration, qmp=qmp, qemu=proc, found=found)
    finally:
        hooks.close()
        plan.close()
