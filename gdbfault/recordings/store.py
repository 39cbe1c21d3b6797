"""A recording folder: what a replay needs, and its manifest (recording.json).

A recording is made in its run's guest folder (machine/config.py: QEMU runs
there and every file it reads has a fixed name). What it is made of:

    recording.json   the manifest: the guest's inputs and their digest
                     (digest.py), the replay log's and the snapshot store's
                     size and sha256, the snapshots in the store with their
                     instruction counts, where replays start, and how the
                     recording run went (its console output included)
    guest.rr.gz      the replay log (machine.config.RECORD_LOG), gzip'd: QEMU's log of
                     timer and device events compresses well (an old kernel's 19 MB
                     boot to 2.8 MB; gzip -1: 0.07 s to pack, 0.05 s to unpack)
    state.qcow2      the snapshot store (or boot.qcow2, the GRUB boot disk's
                     overlay, which names its backing boot.tar relatively)
    kernel.elf, init.elf, bzImage, root.cpio, grub.bin, boot.tar, ...
                     the guest's files, under the names QEMU was given

`pack_log()` writes the packed log beside the one QEMU wrote; `keep()` copies
the recording to a folder of its own (a run's `run.json.rr/`, beside the run
file), hard-linking where the file system allows; a cached copy (cache.py)
leaves the guest's files out (a run that finds it has them). `verify()`
checks a folder against its manifest; `install()` puts a kept recording's
log (unpacked) and store into a new guest folder, whose own files the digest
has already matched, for a replay there.
"""
import gzip
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.tools import find_tool
from gdbfault.machine.config import RECORD_LOG
from gdbfault.recordings.digest import describe_difference, digest_of, sha256_file

__all__ = ["MANIFEST", "SCHEMA", "PACKED_LOG", "RecordingProblem", "read_manifest", "write_manifest",
           "store_snapshots", "file_entry", "verify", "keep", "install", "folder_size", "copy_file", "now_text",
           "pack_log", "unpack_log"]

MANIFEST = "recording.json"
SCHEMA = "gdbfault.recording/1"
PACKED_LOG = RECORD_LOG + ".gz"


class RecordingProblem(GdbfaultError):
    """A recording folder that does not hold what its manifest says (or no manifest at all)."""


def now_text():
    """The time now, as manifests and reports say it (UTC, to the second)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def read_manifest(folder):
    """The manifest of a recording folder; RecordingProblem when it is missing or unreadable."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordingProblem(f"{folder} holds no recording ({MANIFEST} is missing)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordingProblem(f"{path} is unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("guest"), dict):
        raise RecordingProblem(f"{path} is not a gdbfault recording manifest")
    return data


def write_manifest(folder, manifest):
    """Write recording.json (atomically)."""
    path = Path(folder) / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def store_snapshots(store):
    """[{name, icount}] of the VM snapshots in a qcow2 store, by instruction count."""
    done = subprocess.run([find_tool("qemu-img"), "info", "-U", "--output=json", str(store)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RecordingProblem(f"qemu-img cannot read {store}: {(done.stderr or done.stdout).strip()[-200:]}")
    try:
        info = json.loads(done.stdout)
    except ValueError:
        raise RecordingProblem(f"qemu-img said nothing readable about {store}") from None
    seen, out = set(), []
    for snap in info.get("snapshots", []):
        # (savevm through the GRUB path's blkreplay filter writes a name twice: one with the VM state)
        if snap["name"] in seen or not snap.get("vm-state-size"):
            continue
        seen.add(snap["name"])
        out.append({"name": snap["name"], "icount": int(snap.get("icount", -1))})
    return sorted(out, key=lambda s: s["icount"])


def file_entry(path):
    """{name, size, sha256} of a file."""
    path = Path(path)
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def folder_size(folder):
    """Bytes of the files in a folder (a hard-linked file counts where it is)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _check_file(folder, entry, what):
    """`what` (a phrase: "the replay log", "the guest's file") in `folder` is the one in the manifest."""
    path = Path(folder) / entry["name"]
    if not path.is_file():
        raise RecordingProblem(f"{what} {path.name} is missing")
    guest = what.startswith("the guest's")
    size = path.stat().st_size
    if size != entry["size"]:
        raise RecordingProblem(f"{what} {path.name} " + (f"changed since the recording ({size:,} bytes, made with "
                                                         f"{entry['size']:,}: rebuilt?)" if guest else
                                                         f"is {size:,} bytes, not {entry['size']:,} (truncated?)"))
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise RecordingProblem(f"{what} {path.name} " + (f"changed since the recording (sha256 {digest[:12]}…, "
                                                         f"made with {entry['sha256'][:12]}…)" if guest else
                                                         "is damaged (its sha256 is not the recording's)"))


def verify(folder, manifest, inputs=True, current=None):
    """Raise RecordingProblem naming the first thing in `folder` that is not what `manifest` says: its
    digest, the replay log, the store and, with `inputs`, the guest's files. `current`: the guest
    description of the machine about to replay it (digest.guest_inputs), which must be the recording's."""
    if digest_of(manifest["guest"]) != manifest.get("digest"):
        raise RecordingProblem(f"{Path(folder) / MANIFEST} was edited (its digest does not match its contents)")
    _check_file(folder, manifest["log"], "the replay log")
    if manifest.get("store"):
        _check_file(folder, manifest["store"], "the snapshot store")
    if inputs:
        for name, entry in manifest["guest"]["files"].items():
            _check_file(folder, {"name": name, **entry}, "the guest's file")
    if current is not None:
        why = describe_difference(manifest["guest"], current)
        if why is not None:
            raise RecordingProblem(why)


def copy_file(source, target, link=True):
    """`target` made a copy of `source`: a hard link when allowed (never modified in place
    afterwards: a recording's files are only ever replaced), else a copy."""
    target = Path(target)
    target.unlink(missing_ok=True)
    if link:
        try:
            os.link(Path(source).resolve(), target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def keep(source, manifest, target, inputs=True, extra=()):
    """Copy the recording in folder `source` (its manifest `manifest`) to folder `target`,
    replacing what was there only once the copy is complete; `inputs`: the guest's files too;
    `extra`: more files to put beside it, [(path, name)] (the run's fault index, a System.map).
    Returns the target's size in bytes."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        names = [manifest["log"]["name"]] + ([manifest["store"]["name"]] if manifest.get("store") else [])
        if inputs:
            names += list(manifest["guest"]["files"])
        for name in names:
            # the store is written by replays: always a copy of its own
            copy_file(Path(source) / name, partial / name, link=name != (manifest.get("store") or {}).get("name"))
        for path, name in extra:
            copy_file(path, partial / name, link=False)
        write_manifest(partial, manifest)
        verify(partial, manifest, inputs=inputs)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder_size(target)


def pack_log(folder):
    """Write the packed replay log (PACKED_LOG) from the one QEMU wrote in `folder`; its manifest entry.
    A log put there by install() is packed already."""
    folder = Path(folder)
    raw = folder / RECORD_LOG
    if (folder / PACKED_LOG).is_file():
        return {**file_entry(folder / PACKED_LOG), "unpacked_size": raw.stat().st_size}
    with open(raw, "rb") as src, open(folder / PACKED_LOG, "wb") as dst:
        with gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=1, mtime=0) as packed:
            shutil.copyfileobj(src, packed, 1 << 20)
    return {**file_entry(folder / PACKED_LOG), "unpacked_size": raw.stat().st_size}


def unpack_log(source, manifest, target_folder):
    """The replay log of the recording in `source`, unpacked into `target_folder`/guest.rr (checked)."""
    entry = manifest["log"]
    target = Path(target_folder) / RECORD_LOG
    try:
        with gzip.open(Path(source) / entry["name"], "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as exc:
        raise RecordingProblem(f"the replay log {entry['name']} in {source} is damaged ({exc})") from None
    if target.stat().st_size != entry["unpacked_size"]:
        raise RecordingProblem(f"the replay log {entry['name']} in {source} unpacks to {target.stat().st_size:,} "
                               f"bytes, not the recording's {entry['unpacked_size']:,}")
    return target


def install(source, manifest, guest_folder):
    """Put the recording in `source` (log and store) into `guest_folder` for a replay there, and
    check them (a cache entry may be evicted or damaged while it is read)."""
    guest_folder = Path(guest_folder)
    verify(source, manifest, inputs=False)
    if manifest.get("store"):
        copy_file(Path(source) / manifest["store"]["name"], guest_folder / manifest["store"]["name"], link=False)
        _check_file(guest_folder, manifest["store"], "the snapshot store")
    unpack_log(source, manifest, guest_folder)
    copy_file(Path(source) / manifest["log"]["name"], guest_folder / PACKED_LOG)   # (kept again as it is)
    _check_file(guest_folder, {**manifest["log"], "name": PACKED_LOG}, "the replay log")
