"""The kernel profile carried by a counting run: `ProfileAlong`, the RunHooks that load the profile plugin beside it.

`compare --profile` wants counts, path costs and the profile of each kernel.
Rather than boot each kernel again for its profile, the run that counts
carries the kernel-profile plugin too (RunSpec.kernel_profile): two
`-plugin` options in one QEMU (the plugins share nothing, and each one's
output is what it gives alone). Which QEMU carries it is the backend's
business (RunHooks.plugins): the plugin backend's only QEMU, or the GDB
backend's recording — the run that executes what the replay counts, with
no debugger stopping it. Once the run's counts are in, the profile is read
and attached to the RunResult as `kernel_profile` (kprofile/result.py's
dict, as `gdbfault profile` makes it).
"""
from gdbfault.backends.hooks import RunHooks
from gdbfault.kprofile.ranges import (kernel_base, kernel_functions, plugin_options, uaccess_sites,
                                      workload_marks, write_ranges)
from gdbfault.kprofile.result import build_profile, read_kprofile_result
from gdbfault.kprofile.run import profile_meta, without_guest_cycles
from gdbfault.machine.plugins import plugin_args, plugin_library

__all__ = ["ProfileAlong"]


class ProfileAlong(RunHooks):
    """The profile plugin in the run's unobserved QEMU; its profile into result.kernel_profile."""

    def __init__(self, plan):
        spec = plan.spec
        library = plugin_library("kprofile")        # PluginUnavailable before anything boots
        # the lab kernel's ELF has every function symbol (its System.map is for probes)
        self.system_map = None if plan.lab else plan.system_map
        self.funcs = kernel_functions(plan.kernel, self.system_map)
        self.plan = plan
        folder = plan.temp_dir("gdbfault-kprofile-")
        ranges, self.out = folder / "ranges.txt", folder / "kprofile.json"
        # user-access sites from the kernel's code: its ELF, or the vmlinux of an x86_64 bzImage's PVH boot
        uaccess = uaccess_sites(plan.code_file, self.funcs) if plan.code_file else []
        write_ranges(ranges, self.funcs, kernel_base(self.funcs), workload_marks(plan.points), uaccess)
        self.args = plugin_args(library, ranges=ranges, out=self.out,
                                **plugin_options(spec.call_chains, spec.profile_every_block))

    def plugins(self):
        return list(self.args)

    def finish(self, result, counts=None, plugin_counts=None):
        plan = self.plan
        meta = profile_meta(plan, self.system_map)
        meta["mode"].update(backend=f"kprofile plugin, in the counting run ({plan.spec.backend} backend)",
                            icount_shift=result.mode.icount_shift or 0 if plan.spec.icount else None)
        profile = build_profile(read_kprofile_result(self.out), result.guest, meta, self.funcs)
        # the guest's rdtsc counts one cycle per instruction only under -icount shift=0
        one_per_insn = plan.spec.icount and not result.mode.icount_shift
        result.kernel_profile = profile if one_per_insn else without_guest_cycles(profile)
