"""What made a recorded guest run the way it did, and its digest.

A record/replay recording is only valid for the exact inputs that made it:
a replay whose inputs differ stands still, silently (QEMU stays "running"
with its instruction count frozen: seen for a rebuilt kernel, another
command line, another workload, another name for the kernel file, the kvmvapic
device turned back on), or, worse, diverges. So a recording carries a
description of those inputs, and its digest (sha256 of that description
as canonical JSON) is what a run compares before it replays a kept or
cached recording, and what `gdbfault inspect` checks before it opens one:

- `qemu`: the emulator's name and version, the sha256 of the executable that
  really runs (Debian's /usr/bin/qemu-system-* is a shell wrapper around
  /usr/libexec/qemu-system-*) and of the firmware it loads (SeaBIOS and the
  option ROMs of a -kernel boot);
- `machine`: the guest's side of QEMU's argv (machine/config.guest_fields:
  memory, CPU model, file names as given, command line, -icount options, the
  boot's extra arguments) — not what only gdbfault uses (sockets, console file);
- `files`: sha256 and size of every file in the guest folder that the guest
  reads (kernel, initrd or root image, GRUB and its boot disk), under the
  names QEMU is given (those names are guest input too);
- `attendant`: what stopped the recording on its way ("entry snapshot": one
  stop at an old kernel's workload entry to save the snapshot its replays
  start from; "live patch SHA": GDB wrote a patch into the guest).

Not in it: the replay log and the snapshot store (they are the recording,
checked for integrity by their own sha256), the System.map and the
probes (they change what is counted, not what the guest does).
"""
import functools
import hashlib
import json
import re
import subprocess
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.tools import find_tool
from gdbfault.machine.config import guest_fields
from gdbfault.machine.qemu import emulator_target, qemu_version

__all__ = ["guest_inputs", "digest_of", "describe_difference", "sha256_file", "qemu_identity", "guest_files",
           "FIRMWARE"]

# Firmware a -kernel boot of the pc machine loads (SeaBIOS, the multiboot, Linux and PVH
# loaders' option ROMs); whichever of them QEMU's data folders hold.
FIRMWARE = ("bios-256k.bin", "multiboot_dma.bin", "linuxboot_dma.bin", "pvh.bin")


@functools.lru_cache(maxsize=256)
def _sha256(path, size, mtime_ns):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path):
    """sha256 of a file's bytes (remembered per path, size and time for this process)."""
    path = Path(path).resolve()
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def _data_dirs(exe):
    """QEMU's firmware folders (`-L help`), and the folder of the executable that really runs
    (the data folders are given relative to it)."""
    done = subprocess.run([exe, "-L", "help"], capture_output=True, text=True, timeout=20)
    dirs = [Path(line.strip()) for line in done.stdout.splitlines() if line.strip().startswith("/")]
    m = re.match(r"^(/.*?)/\.\./", done.stdout.strip().splitlines()[0]) if dirs else None
    return dirs, Path(m.group(1)) if m else None


@functools.lru_cache(maxsize=None)
def qemu_identity(qemu):
    """{emulator, version, sha256, firmware: {name: sha256}} of a QEMU binary (asked once per process)."""
    exe = find_tool(qemu)
    try:
        dirs, exe_dir = _data_dirs(exe)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GdbfaultError(f"{qemu} did not say where its firmware is ({exc})")
    real = exe_dir / Path(exe).name if exe_dir is not None and (exe_dir / Path(exe).name).is_file() else exe
    firmware = {}
    for name in FIRMWARE:
        found = next((d / name for d in dirs if (d / name).is_file()), None)
        if found is not None:
            firmware[name] = sha256_file(found)
    return {"emulator": emulator_target(qemu), "version": qemu_version(qemu), "sha256": sha256_file(real),
            "firmware": firmware}


def guest_files(folder, leave_out=()):
    """{name: {sha256, size}} of the guest's files in its folder: every regular file but `leave_out`
    (the replay log and the snapshot store)."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.iterdir()):
        if path.name in leave_out or path.name.startswith(".") or not path.is_file():
            continue
        out[path.name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def guest_inputs(config, folder, leave_out=(), attendant=None):
    """The description of a guest (see the module docstring): what the digest covers."""
    fields = guest_fields(config)
    return {"qemu": qemu_identity(fields["qemu"]), "machine": fields,
            "files": guest_files(folder, leave_out), "attendant": attendant}


def digest_of(inputs):
    """sha256 (hex) of a guest description as canonical JSON."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def describe_difference(recorded, current):
    """One phrase naming what differs between two guest descriptions (None when nothing does)."""
    if recorded == current:
        return None
    rq, cq = recorded.get("qemu", {}), current.get("qemu", {})
    if rq != cq:
        if rq.get("version") != cq.get("version"):
            return f"QEMU is {cq.get('version')} now, the recording was made with {rq.get('version')}"
        if rq.get("sha256") != cq.get("sha256"):
            return "the QEMU executable changed since the recording (same version, other bytes)"
        return "QEMU's firmware changed since the recording"
    rf, cf = recorded.get("files", {}), current.get("files", {})
    for name in sorted(set(rf) | set(cf)):
        if name not in cf:
            return f"{name} is missing"
        if name not in rf:
            return f"{name} was not part of the recording"
        if rf[name] != cf[name]:
            return (f"{name} changed since the recording: sha256 {cf[name]['sha256'][:12]}… ≠ "
                    f"{rf[name]['sha256'][:12]}…")
    for key in sorted(set(recorded.get("machine", {})) | set(current.get("machine", {}))):
        if recorded["machine"].get(key) != current["machine"].get(key):
            return f"the machine's {key} differs ({current['machine'].get(key)!r}, recorded " \
                   f"{recorded['machine'].get(key)!r})"
    return "the recording was made another way (" + str(recorded.get("attendant")) + ")"
