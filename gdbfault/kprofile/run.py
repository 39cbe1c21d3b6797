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

from gdbfault import __version__
from gdbfault.backends.plan import resolve_run
from gdbfault.base.errors import GdbfaultError, GuestError
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
    machine = None
    try:
        plan.prepare_machine(role="kprofile")
        meta = profile_meta(plan, system_map)
        run_dir = private_dir()
        ranges, out = run_dir / "ranges.txt", run_dir / "kprofile.json"
        write_ranges(ranges, funcs, kernel_base(funcs), marks, uaccess_sites(plan.kernel, funcs))
        options = {"ranges": ranges, "out": out, **plugin_options(spec.call_chains, spec.profile_every_block)}
        machine = Machine(plugin_config(plan.config, plugin_args(library, **options)), run_dir=run_dir,
                          own_dir=True)
        t0 = time.monotonic()
        machine.start(timeout=plan.left(at_most=20.0))
        status = machine.wait_until(plan.deadline)
        try:
            if status is None:
                raise GuestError(f"the guest did not finish within {spec.timeout_s:.0f} s (hung?)")
            wall = time.monotonic() - t0
            machine.check_exit(status)
            guest = parse_guest_output(machine.serial_output())["result"]
            if guest is None:
                raise GuestError("the workload printed no GDBFAULT-RESULT line")
        except GdbfaultError as exc:
            _keep_partial(exc, machine, out, meta, funcs)
            raise
        profile = build_profile(read_kprofile_result(out), guest, meta, funcs)
        profile["run"] = {"wall_s": round(wall, 3), "exit_status": status, "exit": describe_exit(status)}
        # the guest's rdtsc counts one cycle per instruction only under -icount shift=0
        one_per_insn = spec.icount and not meta["mode"]["icount_shift"]
        return profile if one_per_insn else without_guest_cycles(profile)
    finally:
        if machine is not None:
            machine.close(keep_dir=spec.keep_run_dir)
        plan.close()


def _keep_partial(exc, machine, out, meta, funcs):
    """The profile counted until the run went wrong, on the exception (for --output)."""
    machine.stop()                   # (a QEMU still running writes its counts as it quits)
    if out.is_file():
        try:
            exc.partial = build_profile(read_kprofile_result(out), None, meta, funcs)
            exc.partial.update(complete=False, error=str(exc))
        except GdbfaultError:
            pass


def without_guest_cycles(profile):
    """The profile with no accounting against the guest's cycles: its rdtsc was not
    one cycle per instruction (host time without -icount, 2**shift per instruction)."""
    profile["accounting"] = dict(profile["accounting"], guest_cycles=None, difference=None,
                                 unexplained=None, exact=None, agree=None)
    return profile


def profile_meta(plan, system_map):
    """What was run, as a RunResult says it."""
    spec, kernel, boot = plan.spec, plan.kernel, plan.boot
    return {"tool": {"gdbfault": __version__, "qemu": qemu_version(spec.qemu)},
            "kernel": {"path": str(kernel), "lab": plan.lab, "variant": spec.variant if plan.lab else None,
                       "symbols": str(system_map) if system_map else f"ELF symbol table ({kernel})",
                       "boot": boot.describe() if boot else None},
            "workload": {"name": spec.workload, "iterations": spec.iterations,
                         "command_line": spec.command_line()},
            "mode": {"backend": "kprofile plugin", "accel": "tcg", "icount": spec.icount,
                     # an old kernel's boot runs under a larger shift (kernels/boot.py)
                     "icount_shift": icount_shift(plan.config.icount_options) if spec.icount else None},
            "iterations": spec.iterations}
