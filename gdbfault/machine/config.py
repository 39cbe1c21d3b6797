"""One place for the QEMU machine of a run: a pure function of what was asked.

`machine_config(spec, kernel, initrd, boot, role)` builds the
qemu.MachineConfig of a run from the run spec (command line, icount, memory,
QEMU binary), the kernel and initrd files it names, the boot setup of a
kernel brought as a file (kernels/boot.py's prepare_boot; None for the lab
kernel and multiboot images) and the role of the machine (who runs it).
Every field is set here and nowhere else; the recording, its replay and a
machine with plugins loaded are `dataclasses.replace` copies of it
(`record_config`, `replay_config`, `plugin_config`).

`spec` is a model.spec.RunSpec, as backends/plan.py resolves it (its QEMU
binary and memory filled in; left empty, the lab kernel's: qemu-system-i386,
64 MiB). The CPU model is the one pinned for the emulator's architecture
(qemu.CPU_MODELS). Nothing is read from disk here.
"""
import dataclasses
from pathlib import Path

from gdbfault.machine.qemu import CPU_MODELS, EMULATORS, MachineConfig, emulator_target

__all__ = ["MACHINE_ROLES", "machine_config", "record_config", "replay_config", "plugin_config"]

# Who runs the machine: GDB breakpoints (QEMU starts halted for the debugger),
# the zero-stop counting plugin, the kernel-profile plugin, or nothing at all
# (the bench's plain boot).
MACHINE_ROLES = ("gdb", "plugin", "kprofile", "plain")
# -icount options of a lab kernel's record and replay: one instruction per
# virtual nanosecond, so path costs in instructions read as guest time too.
LAB_ICOUNT = "shift=0"
# The machine of a spec that does not say (the lab kernel's).
DEFAULT_QEMU, DEFAULT_MEMORY_MB = EMULATORS["i386"], 64


def machine_config(spec, kernel, initrd, boot=None, role="gdb"):
    """The MachineConfig of a run (see the module docstring)."""
    if role not in MACHINE_ROLES:
        raise ValueError(f"unknown machine role {role!r}")
    if boot is None:
        files = {"kernel": Path(kernel), "initrd": list(initrd), "append": spec.command_line(),
                 "memory_mb": spec.memory_mb or DEFAULT_MEMORY_MB, "extra_args": []}
        rr_icount = LAB_ICOUNT
    else:
        files = {"kernel": Path(boot.kernel), "initrd": list(boot.initrd), "append": boot.append,
                 "memory_mb": boot.memory_mb, "extra_args": list(boot.extra_args)}
        rr_icount = boot.rr_icount
    qemu = spec.qemu or DEFAULT_QEMU
    return MachineConfig(
        **files, qemu=qemu, cpu=CPU_MODELS.get(emulator_target(qemu)), icount=bool(spec.icount),
        rr_icount=rr_icount,
        # Runs without record/replay: the plugins (and the bench's plain run
        # beside them) boot a brought kernel under its boot's own options (an
        # old kernel's larger shift; sleep=off for a modern one: where the
        # guest idles, virtual time jumps to the next timer instead of
        # following the host's clock, so every run of it is the same
        # computation); a live GDB run keeps one instruction per ns (with
        # sleep=off its stops would move the guest's clock further).
        icount_options=rr_icount if role in ("kprofile", "plugin", "plain") else LAB_ICOUNT,
        halted=role == "gdb",         # the debugger arms its probes before the first instruction
        watch_qmp=False)


def record_config(config, record_file, halted=False):
    """The recording of `config` (rr=record into `record_file`), no network: replayable."""
    return dataclasses.replace(config, icount=True, halted=halted,
                               icount_options=f"{config.rr_icount},rr=record,rrfile={record_file}",
                               extra_args=config.extra_args + ["-net", "none"])


def replay_config(config, record_file, snapshot=None, watch_qmp=False):
    """The replay of a recording of `config`; from the VM snapshot `snapshot`
    (saved in the recording) instead of power-on when given."""
    options = f"{config.rr_icount},rr=replay,rrfile={record_file}"
    if snapshot is not None:
        options += f",rrsnapshot={snapshot}"
    return dataclasses.replace(config, icount=True, halted=True, icount_options=options,
                               extra_args=config.extra_args + ["-net", "none"], watch_qmp=watch_qmp)


def plugin_config(config, plugin_args, halted=False):
    """`config` with TCG plugins loaded (machine.plugins.plugin_args), halted for a debugger when asked."""
    return dataclasses.replace(config, extra_args=config.extra_args + list(plugin_args), halted=halted)
