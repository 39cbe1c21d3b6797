"""One measured run on a QEMU gdbfault boots: `gdbfault attach --qemu`.

`run_qemu(spec)` resolves the run (backends/plan.py: kernel, symbols, probe
profile, probes, workload — checked before anything boots), plugs the
features it asks for into the backend (a live patch: livepatch/hooks.py; the
kernel profile carried beside the counts: kprofile/hooks.py),
prepares the machine (the boot of a kernel the user brings, the QEMU
config, the RunResult skeleton) and hands it to the GDB backend or the
plugin backend. Whatever happens — a guest that oopses or hangs, QEMU or
GDB killed, Ctrl-C — the counts measured so far are kept in the result
attached to the raised RunFailed, and no QEMU, GDB or temporary folder is
left behind. A run whose recording is kept beside its --output gets its
outliers explained from it (inspect/outliers.py): the report names each
path's slowest fault and what it ran that a typical one did not.
"""
import signal

from gdbfault.backends.gdb_backend import run_with_gdb
from gdbfault.backends.hooks import RunHooks
from gdbfault.backends.plan import resolve_run
from gdbfault.backends.plugin_backend import run_with_plugin
from gdbfault.base.errors import GdbfaultError, RunFailed
from gdbfault.base.lifecycle import Stopped
from gdbfault.kprofile.hooks import ProfileAlong
from gdbfault.inspect.outliers import OUTLIERS_NOT_EXPLAINED, explain_outliers
from gdbfault.livepatch.hooks import live_patch_hooks
from gdbfault.probing.measure import end_label

__all__ = ["run_qemu", "BACKEND_RUNS"]

# --backend NAME -> the function that measures a resolved run
BACKEND_RUNS = {"gdb": run_with_gdb, "plugin": run_with_plugin}


def run_qemu(spec, progress=None):
    """Boot, count, and return the RunResult; raise RunFailed on failure.

    spec.timeout_s bounds the whole run (recording, replay and all).
    progress(done, total, hits) is called about once a second when given.
    """
    plan = resolve_run(spec, progress)
    hooks = RunHooks()
    try:
        hooks = _hooks(plan)
        plan.prepare_machine()
        try:
            result = BACKEND_RUNS[spec.backend](plan, hooks)
        except (GdbfaultError, KeyboardInterrupt) as exc:
            raise _failed(plan.result, exc) from None
        _explain(plan, result)
        return result
    finally:
        hooks.close()
        plan.close()


def _hooks(plan):
    """The feature the run asks for, plugged into its backend (at most one: model.spec refuses both)."""
    if plan.spec.live_patch is not None:
        return live_patch_hooks(plan)
    if plan.spec.kernel_profile:
        return ProfileAlong(plan)
    return RunHooks()


def _explain(plan, result):
    """The outlier lines, from the recording kept beside --output (a problem there is a note, never
    a failed run: the counts are what the run is for)."""
    rec = result.recording
    if rec is None or not rec.dir or not rec.shapes:
        return
    try:
        rec.outliers = explain_outliers(plan.spec.keep_recording, result, plan.deadline)
    except GdbfaultError as exc:
        rec.note = f"{OUTLIERS_NOT_EXPLAINED}: {exc}"


def _failed(result, exc):
    """RunFailed for an error or a stop signal, with what was measured until then."""
    cause = exc
    if isinstance(exc, KeyboardInterrupt):
        stopped = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
        cause = GdbfaultError(str(stopped))
        cause.exit_code = stopped.exit_code
    run = result.run
    run.error = str(cause)
    if run.stopped_by_gdbfault:          # what really happened to QEMU
        run.exit = f"stopped by gdbfault ({end_label(exc)})" + (" while recording" if run.phase == "record" else "")
    return RunFailed(cause, result)
