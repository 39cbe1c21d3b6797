"""The recordings cache: record once, count many.

A run whose guest is the same as a cached recording's (the same digest:
digest.py) replays that recording instead of booting again — another probe
set, another cost sample, the same run repeated. Each entry is a folder named
by its digest, holding what a replay needs besides the guest's own files
(which the run that finds it has built itself, byte for byte: the digest
says so): the manifest, the replay log and the snapshot store.

Where: $GDBFAULT_RECORDING_CACHE if set (`off` turns the cache off), else
$XDG_CACHE_HOME/gdbfault/recordings (~/.cache/gdbfault/recordings). Bounded:
$GDBFAULT_RECORDING_CACHE_SIZE (bytes, or with a K, M or G suffix; default
2G); past it, the least recently used entries go. An entry that does not hold
what its manifest says (truncated, damaged, half-written) is removed when a
run finds it, and the run records afresh: a damaged recording is never
replayed. Entries are written under a temporary name and renamed into place,
so a run never sees half of one.
"""
import os
import re
import shutil
import time
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import cache_dir
from gdbfault.recordings.store import RecordingProblem, folder_size, keep, read_manifest, verify

__all__ = ["RecordingCache", "recording_cache", "DEFAULT_SIZE", "CACHE_ENV", "SIZE_ENV", "parse_size"]

CACHE_ENV, SIZE_ENV = "GDBFAULT_RECORDING_CACHE", "GDBFAULT_RECORDING_CACHE_SIZE"
DEFAULT_SIZE = 2 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """Bytes of '2G', '500M', '1048576'; a one-line error otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not m:
        raise GdbfaultError(f"{SIZE_ENV}={text!r} is not a size", "give bytes, or a number with K, M or G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def recording_cache():
    """The user's recordings cache (see the module docstring), or None when it is turned off."""
    where = os.environ.get(CACHE_ENV)
    if where is not None and where.strip().lower() in ("off", "none", "0", ""):
        return None
    limit = parse_size(os.environ[SIZE_ENV]) if os.environ.get(SIZE_ENV) else DEFAULT_SIZE
    if limit <= 0:
        return None
    return RecordingCache(Path(where) if where else cache_dir() / "recordings", limit)


class RecordingCache:
    """A folder of recordings by digest, bounded in size (least recently used go first)."""

    def __init__(self, root, limit=DEFAULT_SIZE):
        self.root, self.limit = Path(root), limit

    def entry(self, digest):
        return self.root / digest

    def find(self, digest):
        """(folder, manifest) of the cached recording with this digest, checked; None when there is
        none or it was damaged (then it is removed, and why is in `self.removed`)."""
        self.removed = None
        folder = self.entry(digest)
        if not folder.is_dir():
            return None
        try:
            manifest = read_manifest(folder)
            if manifest.get("digest") != digest:
                raise RecordingProblem(f"{folder} holds the recording of another guest")
            verify(folder, manifest, inputs=False)
        except RecordingProblem as exc:
            self.removed = str(exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        self.touch(folder)
        return folder, manifest

    @staticmethod
    def touch(folder):
        """Mark an entry used now (the LRU order is the manifests' modification times)."""
        try:
            os.utime(Path(folder) / "recording.json")
        except OSError:
            pass

    def put(self, source, manifest):
        """Cache the recording in folder `source` (replacing an older entry of the same digest);
        then trim the cache to its bound. Returns the entry's folder, or None when it alone is
        larger than the bound."""
        size = sum(manifest[k]["size"] for k in ("log", "store") if manifest.get(k))
        if size > self.limit:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.entry(manifest["digest"])
        keep(source, manifest, target, inputs=False)
        self.trim(keep_entry=target)
        return target

    def entries(self):
        """[(last used, size, folder)] of every entry, least recently used first."""
        out = []
        if not self.root.is_dir():
            return out
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            if folder.name.startswith("."):          # another run's half-written entry
                if time.time() - folder.stat().st_mtime > 3600:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                used = (folder / "recording.json").stat().st_mtime
            except OSError:
                used = 0.0
            out.append((used, folder_size(folder), folder))
        return sorted(out)

    def trim(self, keep_entry=None):
        """Remove the least recently used entries until the cache fits its bound."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, folder in entries:
            if total <= self.limit:
                break
            if keep_entry is not None and folder == Path(keep_entry):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
        return total
