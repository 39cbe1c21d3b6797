"""One measured run: resolve what to measure, set the machine up, hand it to a backend.

`run_qemu(spec)` is `gdbfault attach --qemu`: it validates the RunSpec, reads
the kernel's symbols, picks its probe profile and resolves the probes, prepares
the boot of a kernel you bring (realkernel.py), builds the machine config
(machine_config.py) and the RunResult skeleton, then hands the run to the GDB
backend (gdb_run.py) or the plugin backend (plugin_run.py). Whatever happens —
a guest that oopses or hangs, QEMU or GDB killed, Ctrl-C — the counts measured
so far are kept in the result attached to the raised RunFailed, and no QEMU, GDB
or temporary folder is left behind.
"""
import shutil
import signal
import time

from gdbfault import __version__
from gdbfault.base.errors import GdbfaultError, RunFailed
from gdbfault.machine.gdbmi import gdb_version
from gdbfault.base.lifecycle import Stopped, shielded
from gdbfault.model.spec import validate_spec
from gdbfault.kernels.image import read_image
from gdbfault.machine.config import machine_config
from gdbfault.probing.measure import end_label, probe_rows
from gdbfault.kernels.profiles import load_profile, pick_profile, resolve_probes, role_alternatives
from gdbfault.kernels.boot import icount_shift, truth_model
from gdbfault.machine.qemu import qemu_version
from gdbfault.model.result import Kernel, Mode, RunResult, Tool, Workload
from gdbfault.kernels.symbols import load_symbols
from gdbfault.kernels.workloads import elf_entry, is_own_workload, workload_file

__all__ = ["run_qemu"]


def run_qemu(spec, progress=None):
    """Boot, count, and return the RunResult; raise RunFailed on failure.

    spec.timeout_s bounds the whole run (recording, replay and all).
    progress(done, total, hits) is called about once a second when given.
    """
    validate_spec(spec)
    deadline = time.monotonic() + spec.timeout_s
    kernel, system_map = spec.kernel_files()
    symbols = load_symbols(kernel, system_map)
    image = None if spec.kernel == "lab" else read_image(kernel)
    profile = load_profile(spec.profile) if spec.profile else \
        pick_profile(symbols, image.release if image else None)
    if spec.profile:
        profile.reason = "chosen with --profile"
    probes = resolve_probes(profile, symbols, spec.extra_probes)
    initrd = [workload_file(spec.workload)] if spec.workload else []
    arm = elf_entry(initrd[0]) if initrd else None
    live = None
    if spec.live_patch is not None:      # built (or refused) before anything boots
        from gdbfault.livepatch.hooks import prepare
        live = prepare(spec, kernel, system_map)
    boot = None
    cleanup = []                         # folders to remove at the end
    try:
        if spec.kernel != "lab":         # a kernel the user brings: root, boot path, cmdline
            from gdbfault.kernels.boot import prepare_boot
            boot = prepare_boot(kernel, symbols, initrd[0] if initrd else None, spec.command_line(),
                                spec.memory_mb)
            cleanup.append(boot.work_dir)
        result = _new_result(spec, kernel, symbols, profile, probes, boot)
        result.kernel.profile_reason = profile.reason
        result.kernel.profile_notes = list(profile.notes)
        if boot:
            result.kernel.model = truth_model(profile.name, boot.image)
            if spec.replay and spec.icount:
                result.mode.icount_shift = icount_shift(boot.rr_icount)
        for p in result.probes:
            p.alternatives = role_alternatives(p.role, symbols, p.symbol)
        config = machine_config(spec, kernel, initrd, boot, spec.backend)
    except BaseException:
        with shielded():
            for folder in cleanup:
                shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        if spec.backend == "plugin":
            from gdbfault.backends.plugin_backend import run_with_plugin
            return run_with_plugin(spec, result, config, probes, arm, deadline, live)
        from gdbfault.backends.gdb_backend import run_with_gdb
        return run_with_gdb(spec, result, config, symbols, probes, arm, boot, cleanup, progress, deadline,
                            live)
    except (GdbfaultError, KeyboardInterrupt) as exc:
        cause = exc
        if isinstance(exc, KeyboardInterrupt):
            stopped = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
            cause = GdbfaultError(str(stopped))
            cause.exit_code = stopped.exit_code
        run = result.run
        run.error = str(cause)
        if run.stopped_by_gdbfault:      # what really happened to QEMU
            run.exit = f"stopped by gdbfault ({end_label(exc)})" + (
                " while recording" if run.phase == "record" else "")
        raise RunFailed(cause, result) from None
    finally:
        with shielded():
            for folder in cleanup:
                shutil.rmtree(folder, ignore_errors=True)


def _new_result(spec, kernel, symbols, profile, probes, boot):
    """The RunResult skeleton, before anything is measured."""
    return RunResult(
        tool=Tool(gdbfault=__version__, qemu=qemu_version(spec.qemu),
                  gdb=gdb_version(spec.gdb) if spec.backend == "gdb" else None),
        kernel=Kernel(path=str(kernel), lab=spec.kernel == "lab",
                      variant=spec.variant if spec.kernel == "lab" else None,
                      symbols=f"{symbols.kind} ({symbols.source})", profile=profile.name,
                      model=spec.kernel_model(profile.name), boot=boot.describe() if boot else None),
        workload=Workload(name=spec.workload, own=is_own_workload(spec.workload), iterations=spec.iterations,
                          command_line=spec.command_line()),
        mode=Mode(backend=spec.backend, accel="tcg", icount=spec.icount, trace=spec.trace,
                  cost_sample=spec.cost_sample),
        probes=probe_rows(probes))
