"""One run, resolved before anything boots: `RunPlan`, what every backend is handed.

`resolve_run(spec)` reads what the RunSpec names — the kernel and its
symbols (spec.kernel_files: the one place that says which kernel and
System.map a run uses), the probe profile and the probes, the workload —
and checks it all, with no side effect: a mistake here costs nothing. That
includes whether the parts' architectures fit (kernels/arch.py: image, map,
workload and QEMU binary) and whether the guest's memory holds the kernel;
the plan's `spec` is the user's with the QEMU binary and the memory filled in.
`plan.prepare_machine()` then does what leaves files behind until
`plan.close()`: the boot of a kernel the user brings (its root file system,
GRUB image, snapshot store: kernels/boot.py), the QEMU machine config and
the RunResult skeleton the backend fills.
"""
import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from gdbfault import __version__
from gdbfault.base.lifecycle import shielded
from gdbfault.kernels.arch import resolve_arch
from gdbfault.kernels.boot import guest_memory_mb, icount_shift, prepare_boot, truth_model
from gdbfault.kernels.image import PVH, read_image
from gdbfault.kernels.profiles import choose_profile, resolve_probes, role_alternatives
from gdbfault.kernels.identity import check_map_fits, image_code
from gdbfault.kernels.symbols import load_symbols, symbol_rows
from gdbfault.kernels.workloads import elf_entry, is_own_workload, workload_file, workload_points
from gdbfault.machine.config import machine_config
from gdbfault.machine.gdbmi import gdb_version
from gdbfault.machine.qemu import place, private_dir, qemu_version
from gdbfault.model.result import Kernel, Mode, RunResult, Tool, Workload
from gdbfault.model.spec import validate_spec
from gdbfault.probing.measure import probe_rows

__all__ = ["RunPlan", "resolve_run", "new_result", "MULTIBOOT_NAMES"]

# A multiboot kernel's and its module's (the workload's) names in the guest folder: QEMU
# writes them into guest memory, so they are part of the guest's input.
MULTIBOOT_NAMES = ("kernel.elf", "init.elf")


@dataclass
class RunPlan:
    """Everything a backend needs for one run (see the module docstring)."""

    spec: object                  # model.spec.RunSpec, its QEMU binary and memory resolved
    kernel: Path                  # the kernel file: the lab kernel's ELF or the image the user brought
    system_map: Path              # None: the ELF's own symbols
    symbols: object               # kernels.symbols.SymbolTable
    image: object                 # kernels.image.KernelImage of a brought kernel; None for the lab kernel
    profile: object               # kernels.profiles.ProbeProfile (None: a run without probes)
    probes: list                  # [kernels.profiles.ResolvedProbe]
    workload: Path                # the ELF that runs as init; None: no workload
    deadline: float               # time.monotonic() by which the whole run must be over (--timeout)
    arch: object = None           # kernels.arch.RunArch: the kernel's, the emulator's, the workload's
    progress: object = None       # progress(done, total, hits), about once a second
    boot: object = None           # kernels.boot.BootSetup of a brought kernel (prepare_machine)
    config: object = None         # machine.qemu.MachineConfig (prepare_machine)
    result: RunResult = None      # the skeleton the backend fills (prepare_machine)
    cleanup: list = field(default_factory=list)   # folders removed by close()
    kept: list = field(default_factory=list)      # folders --keep-run-dir keeps (close() names them in the result)
    identity: dict = None         # how the System.map was checked against the image (kernels/identity.py)
    guest_dir: Path = None        # the folder QEMU runs in (prepare_machine)

    @property
    def lab(self):
        return self.spec.kernel == "lab"

    @property
    def code_file(self):
        """An ELF holding the running kernel's code, to read fixed points from (a return site,
        the exception table): the lab kernel's, an ELF the user brought, or the vmlinux extracted
        from an x86_64 bzImage for its PVH boot (prepare_machine); None for other images."""
        if self.boot is not None and self.boot.plan.path == PVH:
            return self.boot.kernel
        if self.lab or (self.image is not None and self.image.format == "elf"):
            return self.kernel
        return None

    @property
    def arm(self):
        """The workload's first instruction, where the boot phase ends (None without a workload)."""
        return elf_entry(self.workload) if self.workload else None

    @cached_property
    def points(self):
        """The workload's fixed points (kernels.workloads.WorkloadPoints); None without a workload."""
        return workload_points(self.workload) if self.workload else None

    def left(self, at_most=None, at_least=1.0):
        """Seconds until the deadline, within [at_least, at_most]."""
        left = max(at_least, self.deadline - time.monotonic())
        return min(left, at_most) if at_most is not None else left

    def temp_dir(self, prefix):
        """A new private folder that close() removes."""
        folder = private_dir(prefix)
        self.cleanup.append(folder)
        return folder

    def prepare_machine(self, role=None):
        """The boot (a brought kernel), the machine config and the result skeleton.
        `role` is the machine's (machine.config.MACHINE_ROLES); default: the run's backend.
        QEMU runs in the guest folder, where every file it reads has a fixed name (machine/config.py):
        the boot's own folder for a kernel brought as an image, else one made here."""
        spec = self.spec
        if not self.lab and not self.image.multiboot:
            self.boot = prepare_boot(self.kernel, self.symbols, self.workload, spec.command_line(),
                                     spec.memory_mb)
            self.cleanup.append(self.boot.work_dir)
            self.guest_dir = self.boot.work_dir
            self.config = machine_config(spec, self.boot.kernel, [], self.boot, role or spec.backend)
        else:
            self.guest_dir = folder = self.temp_dir("gdbfault-guest-")
            kernel = folder / place(self.kernel, folder, MULTIBOOT_NAMES[0])
            initrd = [folder / place(self.workload, folder, MULTIBOOT_NAMES[1])] if self.workload else []
            self.config = machine_config(spec, kernel, initrd, None, role or spec.backend, folder=folder)
        if self.profile is not None:
            self.result = new_result(self)
        return self

    def keep(self, folder):
        """--keep-run-dir: a folder to keep (and name) rather than remove."""
        if folder not in self.kept:
            self.kept.append(folder)

    def close(self):
        """Remove every folder the run made — with --keep-run-dir keep them all, the recording's
        too (also when the run failed) and name them in the result; no signal cuts it short."""
        with shielded():
            for folder in self.cleanup:
                if self.spec.keep_run_dir and Path(folder).exists():
                    self.keep(folder)
                else:
                    shutil.rmtree(folder, ignore_errors=True)
            self.cleanup.clear()
            if self.kept and self.result is not None:
                self.result.run.kept = [str(f) for f in self.kept]


def resolve_run(spec, progress=None, probes=True):
    """The RunPlan of a RunSpec, checked (one-line errors, exit 2), before anything boots.
    probes=False: a run that arms no probes (the kernel profile) needs no probe profile."""
    validate_spec(spec)
    deadline = time.monotonic() + spec.timeout_s
    kernel, system_map = spec.kernel_files()
    header = read_image(kernel)
    symbols = load_symbols(kernel, system_map)
    workload, abi = workload_file(spec.workload, spec.workload_abi) if spec.workload else (None, None)
    arch = resolve_arch(Path(kernel), header.arch, symbols, workload, abi, spec.qemu)
    memory = guest_memory_mb(spec.memory_mb, header, workload.stat().st_size if workload else 0,
                             lab=spec.kernel == "lab" or header.multiboot)
    image = None if spec.kernel == "lab" else header
    profile = choose_profile(spec.profile, symbols, image.release if image else None) if probes else None
    resolved = resolve_probes(profile, symbols, spec.extra_probes) if probes else []
    identity = _check_map(kernel, system_map, symbols, image, resolved) if system_map else None
    return RunPlan(spec=dataclasses.replace(spec, qemu=arch.qemu, memory_mb=memory), kernel=Path(kernel),
                   system_map=Path(system_map) if system_map else None, symbols=symbols, image=image,
                   profile=profile, probes=resolved, workload=workload, deadline=deadline, progress=progress,
                   arch=arch, identity=identity)


def _check_map(kernel, system_map, symbols, image, probes):
    """A System.map of another build is refused here, before anything boots (kernels/identity.py):
    its functions must be where the image's own code calls them. {"map": what was found}."""
    rows, _ = symbol_rows(kernel, system_map)
    code = image_code(kernel, symbols)
    return {"map": check_map_fits(rows, system_map, kernel, image.version if image else None, code, probes)}


def new_result(plan):
    """The RunResult skeleton of a planned run, before anything is measured."""
    spec, profile, boot = plan.spec, plan.profile, plan.boot
    arch = plan.arch
    result = RunResult(
        tool=Tool(gdbfault=__version__, qemu=qemu_version(spec.qemu),
                  gdb=gdb_version(spec.gdb) if spec.backend == "gdb" else None),
        kernel=Kernel(path=str(plan.kernel), lab=plan.lab, variant=spec.variant if plan.lab else None,
                      symbols=f"{plan.symbols.kind} ({plan.symbols.source})", profile=profile.name,
                      model=spec.kernel_model(profile.name), boot=boot.describe() if boot else None),
        workload=Workload(name=spec.workload, own=is_own_workload(spec.workload), iterations=spec.iterations,
                          command_line=spec.command_line()),
        mode=Mode(backend=spec.backend, accel="tcg", icount=spec.icount, trace=spec.trace,
                  cost_sample=spec.cost_sample),
        probes=probe_rows(plan.probes))
    result.tool.emulator = Path(arch.qemu).name
    result.kernel.arch = arch.kernel
    result.mode.cpu = arch.cpu
    if arch.workload is not None:
        result.workload.abi = arch.workload
        result.workload.ia32_emulation = arch.ia32_emulation
    result.kernel.profile_reason = profile.reason
    if plan.identity:
        result.kernel.identity = dict(plan.identity)
    result.kernel.profile_notes = list(profile.notes)
    if boot:
        result.kernel.model = truth_model(profile.name, boot.image)
        if spec.replay and spec.icount:
            result.mode.icount_shift = icount_shift(boot.rr_icount)
    for p in result.probes:
        p.alternatives = role_alternatives(p.role, plan.symbols, p.symbol)
    return result
