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

Given a guest folder, QEMU runs there and every file the config names lies in
it, named relatively: QEMU writes the `-kernel` and `-initrd` names of a
multiboot kernel into guest memory, so a recording replays only under the
very names it was made with; with fixed names in a folder of its own, it can
be kept and replayed anywhere (recordings/). A recording and its replay also:
- run with `-global apic.vapic=off`: QEMU 7.2's kvmvapic device re-arms
  itself when a VM snapshot is loaded into a guest that has run, with a
  synchronous call to the vCPU while the main loop holds the replay lock —
  every replay-seek, reverse-stepi/continue and loadvm then deadlocked (12 in
  12 seen); without the device, none in 60+. It only changes the BIOS (a
  Windows TPR-patching option ROM no longer runs), never a kernel's path;
- keep their VM snapshots (the one at instruction 0, `START_SNAPSHOT`, the old
  kernels' one at the workload's entry, the replay's keyframes) in a qcow2
  file: the boot disk's overlay (GRUB) or STATE_STORE, attached to no device.
"""
import dataclasses
from pathlib import Path

from gdbfault.machine.qemu import CPU_MODELS, EMULATORS, MachineConfig, emulator_target

__all__ = ["MACHINE_ROLES", "machine_config", "record_config", "replay_config", "plugin_config", "guest_fields",
           "config_from_fields", "STATE_STORE", "START_SNAPSHOT", "RECORD_LOG", "RECORDING_ARGS"]

# Who runs the machine: GDB breakpoints (QEMU starts halted for the debugger),
# the zero-stop counting plugin, the kernel-profile plugin, or nothing at all
# (the bench's plain boot).
MACHINE_ROLES = ("gdb", "plugin", "kprofile", "plain")
# -icount options of a lab kernel's record and replay: one instruction per
# virtual nanosecond, so path costs in instructions read as guest time too.
LAB_ICOUNT = "shift=0"
# The machine of a spec that does not say (the lab kernel's).
DEFAULT_QEMU, DEFAULT_MEMORY_MB = EMULATORS["i386"], 64
# In the guest folder: the replay log, and the snapshot store a record/replay attaches when
# the boot has none of its own; the snapshot a recording saves at its first instruction.
RECORD_LOG, STATE_STORE, START_SNAPSHOT = "guest.rr", "state.qcow2", "gdbfault-start"
# What every recording and its replays add (see the module docstring).
RECORDING_ARGS = ["-net", "none", "-global", "apic.vapic=off"]
# The MachineConfig fields that say what the guest is (a recording's guest: recordings/).
_GUEST_FIELDS = ("qemu", "memory_mb", "cpu", "kernel", "initrd", "append", "rr_icount", "extra_args", "store")


def _within(path, folder):
    """`path` named relative to `folder` when it lies there (as it must in a guest folder)."""
    if folder is None:
        return Path(path)
    path = Path(path)
    if not path.is_absolute():
        return path
    try:
        return path.relative_to(folder)
    except ValueError:
        raise ValueError(f"{path} is not in the guest folder {folder}") from None


def machine_config(spec, kernel, initrd, boot=None, role="gdb", folder=None):
    """The MachineConfig of a run (see the module docstring); `folder`: the guest folder that
    holds every file named (the boot's own folder for a kernel brought as an image)."""
    if role not in MACHINE_ROLES:
        raise ValueError(f"unknown machine role {role!r}")
    if boot is None:
        files = {"kernel": _within(kernel, folder), "initrd": [_within(p, folder) for p in initrd],
                 "append": spec.command_line(), "memory_mb": spec.memory_mb or DEFAULT_MEMORY_MB,
                 "extra_args": [], "store": None}
        rr_icount = LAB_ICOUNT
    else:
        folder = boot.work_dir if folder is None else folder
        files = {"kernel": _within(boot.kernel, folder), "initrd": [_within(p, folder) for p in boot.initrd],
                 "append": boot.append, "memory_mb": boot.memory_mb, "extra_args": list(boot.extra_args),
                 "store": boot.store}
        rr_icount = boot.rr_icount
    qemu = spec.qemu or DEFAULT_QEMU
    return MachineConfig(
        **files, qemu=qemu, cpu=CPU_MODELS.get(emulator_target(qemu)), icount=bool(spec.icount), cwd=folder,
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


def _recorded(config, mode, record_file, snapshot, store):
    """`config` under -icount rr=MODE, with the recording's own arguments and its snapshot store
    (`store`: False when there is none)."""
    options = f"{config.rr_icount},rr={mode},rrfile={record_file}"
    if snapshot is not None:
        options += f",rrsnapshot={snapshot}"
    extra = config.extra_args + RECORDING_ARGS
    if store and config.store is None:       # (a boot disk's overlay is attached by the boot's own args)
        extra += ["-drive", f"file={STATE_STORE},format=qcow2,if=none,id=gdbfault-state"]
    return dataclasses.replace(config, icount=True, icount_options=options, extra_args=extra,
                               store=(config.store or STATE_STORE) if store else None)


def record_config(config, record_file=RECORD_LOG, halted=False, snapshot=START_SNAPSHOT, store=True):
    """The recording of `config` (rr=record into `record_file`, in the guest folder), no network:
    replayable; with `store`, the VM snapshot `snapshot` is saved as it starts."""
    return dataclasses.replace(_recorded(config, "record", record_file, snapshot if store else None, store),
                               halted=halted)


def replay_config(config, record_file=RECORD_LOG, snapshot=None, watch_qmp=False, store=True):
    """The replay of a recording of `config`; from the VM snapshot `snapshot` (saved in the recording,
    or by a replay) instead of power-on when given."""
    return dataclasses.replace(_recorded(config, "replay", record_file, snapshot, store), halted=True,
                               watch_qmp=watch_qmp)


def guest_fields(config):
    """What says which guest a config runs, as plain data (a recording's manifest; the digest's)."""
    out = {}
    for name in _GUEST_FIELDS:
        value = getattr(config, name)
        out[name] = [str(v) for v in value] if isinstance(value, list) else \
            str(value) if isinstance(value, Path) else value
    return out


def config_from_fields(fields, folder, role="gdb"):
    """The MachineConfig of guest_fields() run in `folder` (a copy of the guest folder)."""
    values = {k: fields[k] for k in _GUEST_FIELDS}
    values["kernel"], values["initrd"] = Path(values["kernel"]), [Path(p) for p in values["initrd"]]
    return MachineConfig(**values, icount=True, icount_options=fields["rr_icount"], halted=role == "gdb",
                         cwd=Path(folder))


def plugin_config(config, plugin_args, halted=False):
    """`config` with TCG plugins loaded (machine.plugins.plugin_args), halted for a debugger when asked."""
    return dataclasses.replace(config, extra_args=config.extra_args + list(plugin_args), halted=halted)
