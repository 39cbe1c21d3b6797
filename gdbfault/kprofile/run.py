"""`gdbfault profile`: where every kernel instruction of the workload goes.

A profile is a run like any other (a model.spec.RunSpec, resolved by
backends/plan.py: kernel, System.map, workload, boot of a kernel the user
brings), with gdbfault's kernel-profile TCG plugin (qemu/plugin/kprofile.c)
loaded instead of probes: the plugin is told the kernel's functions and the
workload's marks (ranges.py) and what it counted becomes a profile dict
(result.py, rendered by report.py).

The workload window is exactly the guest's measured loop: its two rdtsc
instructions (found in the workload's rt_main) are the plugin's phase marks,
so under -icount shift=0 kernel + user equals the guest's `cycles` up to one
instruction per translation block left early (a faulting instruction counts
for its attempt, which icount does not count).
"""
import time
from pathlib import Path

from gdbfault import __version__
from gdbfault.backends.plan import resolve_run
from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.base.lifecycle import Stopped, shielded
from gdbfault.kernels.boot import icount_shift
from gdbfault.kprofile.ranges import (kernel_base, kernel_functions, plugin_options, uaccess_sites,
                                      workload_marks, write_ranges)
from gdbfault.kprofile.result import build_profile, read_kprofile_result
from gdbfault.machine.config import plugin_config
from gdbfault.machine.plugins import plugin_args, plugin_library
from gdbfault.machine.qemu import Machine, describe_exit, private_dir, qemu_version
from gdbfault.model.truth import parse_guest_output

__all__ = ["run_profile", "profile_meta", "without_guest_cycles", "NOT_ON_RUNNING_QEMU"]

NOT_ON_RUNNING_QEMU = ("a kernel profile needs the TCG plugin loaded when QEMU starts; "
                       "it cannot be added to a running QEMU: use `gdbfault profile --qemu`")


def run_profile(spec):
    """Boot with the kernel-profile plugin, run the workload, return the profile dict.

    The plugin writes its counts whenever QEMU exits: a run that went wrong
    raises with `.partial`, the profile until then, for --output."""
    library = plugin_library("kprofile")
    plan = resolve_run(spec, probes=False)
    # The lab kernel's ELF has every function symbol (its System.map is for probes).
    system_map = None if plan.lab else plan.system_map
    funcs = kernel_functions(plan.kernel, system_map)
    marks = workload_marks(plan.points)
    machine = meta = out = kept_in = None
    try:
        plan.prepare_machine(role="kprofile")
        meta = profile_meta(plan, system_map)
        run_dir = private_dir()
        ranges, out = run_dir / "ranges.txt", run_dir / "kprofile.json"
        # user-access sites from the kernel's code: its ELF, or the vmlinux of an x86_64 bzImage's PVH boot
        uaccess = uaccess_sites(plan.code_file, funcs) if plan.code_file else []
        write_ranges(ranges, funcs, kernel_base(funcs), marks, uaccess)
        options = {"ranges": ranges, "out": out, **plugin_options(spec.call_chains, spec.profile_every_block)}
        machine = Machine(plugin_config(plan.config, plugin_args(library, **options)), run_dir=run_dir,
                          own_dir=True)
        t0 = time.monotonic()
        machine.start(timeout=plan.left(at_most=20.0))
        status = machine.wait_until(plan.deadline)
        if status is None:
            raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s (hung?)")
        wall = time.monotonic() - t0
        machine.check_exit(status)
        guest = parse_guest_output(machine.serial_output())["result"]
        if guest is None:
            raise GuestError("the workload printed no GDBFAULT-RESULT line")
        profile = build_profile(read_kprofile_result(out), guest, meta, funcs)
        profile["run"] = {"wall_s": round(wall, 3), "exit_status": status, "exit": describe_exit(status)}
        kept_in = profile["run"]
        # the guest's rdtsc counts one cycle per instruction only under -icount shift=0
        one_per_insn = spec.icount and not meta["mode"]["icount_shift"]
        return profile if one_per_insn else without_guest_cycles(profile)
    except (GdbfaultError, KeyboardInterrupt) as exc:
        # Like every run: a signal or the timeout keeps what was counted (the plugin writes its
        # counts when QEMU quits in order), as a profile marked incomplete, for --output.
        with shielded():
            error = _as_error(exc)
            error.partial = _partial(error, machine, out, meta, funcs)
            kept_in = error.partial["run"] if error.partial else None
        raise error from None
    finally:
        if machine is not None:
            machine.close(keep_dir=spec.keep_run_dir)
            if spec.keep_run_dir:
                plan.keep(machine.run_dir)
        plan.close()
        if kept_in is not None and plan.kept:
            kept_in["kept"] = [str(f) for f in plan.kept]


def _as_error(exc):
    """A stop signal as the GdbfaultError that exits with its code (128 + the signal)."""
    if not isinstance(exc, KeyboardInterrupt):
        return exc
    stopped = exc if isinstance(exc, Stopped) else Stopped()
    error = GdbfaultError(str(stopped))
    error.exit_code = stopped.exit_code
    error.stopped = stopped
    return error


def _partial(error, machine, out, meta, funcs):
    """The profile counted until the run went wrong (None before there was a run to keep)."""
    if meta is None:
        return None
    stopped = getattr(error, "stopped", None)
    run = {"exit": f"stopped by gdbfault ({stopped.label})" if stopped else str(error)}
    if machine is not None:
        status = machine.stop()          # (a QEMU still running writes its counts as it quits)
        run.update(exit_status=status)
        if out is not None and out.is_file():
            try:
                partial = build_profile(read_kprofile_result(out), None, meta, funcs)
                partial.update(complete=False, error=str(error), run=run)
                return partial
            except GdbfaultError:
                pass
    return dict(meta, complete=False, error=str(error), run=run, functions=[],
                note="nothing was counted: the guest had not started")


def without_guest_cycles(profile):
    """The profile with no accounting against the guest's cycles: its rdtsc was not
    one cycle per instruction (host time without -icount, 2**shift per instruction)."""
    profile["accounting"] = dict(profile["accounting"], guest_cycles=None, difference=None,
                                 unexplained=None, exact=None, agree=None)
    return profile


def profile_meta(plan, system_map):
    """What was run, as a RunResult says it."""
    spec, kernel, boot, arch = plan.spec, plan.kernel, plan.boot, plan.arch
    return {"tool": {"gdbfault": __version__, "qemu": qemu_version(spec.qemu), "emulator": Path(spec.qemu).name},
            "kernel": {"path": str(kernel), "lab": plan.lab, "variant": spec.variant if plan.lab else None,
                       "symbols": str(system_map) if system_map else f"ELF symbol table ({kernel})",
                       "boot": boot.describe() if boot else None, "arch": arch.kernel},
            "workload": {"name": spec.workload, "iterations": spec.iterations,
                         "command_line": spec.command_line(), "abi": arch.workload,
                         "ia32_emulation": arch.ia32_emulation},
            "mode": {"backend": "kprofile plugin", "accel": "tcg", "icount": spec.icount, "cpu": arch.cpu,
                     # an old kernel's boot runs under a larger shift (kernels/boot.py)
                     "icount_shift": icount_shift(plan.config.icount_options) if spec.icount else None},
            "iterations": spec.iterations}
