"""Record once, count many: the recordings cache, end to end and in pieces.

A second identical run replays the cached recording (no boot) and counts the
same, cost for cost; a change in any input of the guest (the kernel rebuilt,
another --append, another QEMU) records afresh; a damaged or truncated cache
entry is found, removed and recorded again, never replayed; the old-kernel
fixture's second run starts from its recording's workload-entry snapshot.
The cache is a folder of the test's own (GDBFAULT_RECORDING_CACHE).
"""
import json
import shutil
from pathlib import Path

import pytest

from gdbfault.base.errors import GdbfaultError
from gdbfault.kernels.grub import grub_available
from gdbfault.model.spec import RunSpec
from gdbfault.recordings import digest as digest_module
from gdbfault.recordings.cache import RecordingCache, parse_size, recording_cache
from gdbfault.recordings.digest import describe_difference, digest_of
from gdbfault.recordings.store import PACKED_LOG, write_manifest
from gdbfault.runs.booted import run_qemu

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "qemu" / "kernel" / "build"
ITERATIONS = 10


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "recordings"
    monkeypatch.setenv("GDBFAULT_RECORDING_CACHE", str(folder))
    return folder


def counted(result):
    """What a run counted: hits, every path's costs, the guest's own summary."""
    return ([(p.role, p.hits.boot, p.hits.workload) for p in result.probes],
            [(p.shape, p.count, p.cost_hist) for p in result.paths], result.guest)


def entries(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.qemu
def test_a_second_identical_run_replays_the_cached_recording(lab_built, cache, no_leaks):
    first = run_qemu(RunSpec(iterations=ITERATIONS))
    assert first.record.reused is None and first.recording.cache and first.recording.replayed is None
    (entry,) = entries(cache)
    assert entry.name == first.recording.digest and (entry / PACKED_LOG).is_file()
    second = run_qemu(RunSpec(iterations=ITERATIONS))
    assert second.record.reused == "cache" and second.recording.replayed == "cache"
    assert second.recording.made == first.recording.made and second.recording.digest == first.recording.digest
    assert counted(second) == counted(first) and second.checks_ok
    from gdbfault.views.report import render
    assert f"replayed the recording of {first.recording.made}" in render(second)
    # another probe set on the same guest: the same recording
    third = run_qemu(RunSpec(iterations=ITERATIONS, extra_probes=[("mm", "handle_pte_fault")]))
    assert third.record.reused == "cache" and third.probe("mm").hits.workload == ITERATIONS
    # --fresh-recording records anew (and the cache keeps one entry of the guest)
    fresh = run_qemu(RunSpec(iterations=ITERATIONS, fresh_recording=True))
    assert fresh.record.reused is None and counted(fresh) == counted(first)
    assert len(entries(cache)) == 1


@pytest.mark.qemu
def test_a_change_in_any_input_records_afresh(lab_built, cache, tmp_path, monkeypatch, no_leaks):
    kernel = tmp_path / "kernel.elf"
    shutil.copy(BUILD / "vanilla" / "kernel.elf", kernel)
    base = run_qemu(RunSpec(kernel=str(kernel), iterations=ITERATIONS))
    assert base.record.reused is None
    # another --append
    other = run_qemu(RunSpec(kernel=str(kernel), iterations=ITERATIONS, append="quiet"))
    assert other.record.reused is None and other.recording.digest != base.recording.digest
    # the kernel rebuilt (the patched build in its place)
    shutil.copy(BUILD / "patched" / "kernel.elf", kernel)
    rebuilt = run_qemu(RunSpec(kernel=str(kernel), iterations=ITERATIONS))
    assert rebuilt.record.reused is None and rebuilt.recording.digest != base.recording.digest
    assert rebuilt.path("user bad area → signal") is not None
    # another QEMU (a new version of it, as QEMU says)
    shutil.copy(BUILD / "vanilla" / "kernel.elf", kernel)
    assert run_qemu(RunSpec(kernel=str(kernel), iterations=ITERATIONS)).record.reused == "cache"
    real = digest_module.qemu_identity

    def newer(qemu):
        return {**real(qemu), "version": "7.2.99"}
    monkeypatch.setattr(digest_module, "qemu_identity", newer)
    upgraded = run_qemu(RunSpec(kernel=str(kernel), iterations=ITERATIONS))
    assert upgraded.record.reused is None and upgraded.recording.digest != base.recording.digest
    assert len(entries(cache)) == 4


@pytest.mark.qemu
@pytest.mark.parametrize("damage", ["truncate the log", "flip a byte of the store", "garble the manifest"])
def test_a_damaged_cache_entry_is_removed_and_recorded_again(lab_built, cache, no_leaks, damage):
    first = run_qemu(RunSpec(iterations=ITERATIONS))
    (entry,) = entries(cache)
    if damage == "truncate the log":
        log = entry / PACKED_LOG
        log.write_bytes(log.read_bytes()[:len(log.read_bytes()) // 2])
    elif damage == "flip a byte of the store":
        store = entry / "state.qcow2"
        data = bytearray(store.read_bytes())
        data[len(data) // 3] ^= 0xFF
        store.write_bytes(bytes(data))
    else:
        (entry / "recording.json").write_text("{not json")
    again = run_qemu(RunSpec(iterations=ITERATIONS))
    assert again.record.reused is None, "a damaged recording was replayed"
    assert "damaged cache entry was removed" in again.recording.note
    assert counted(again) == counted(first)
    (fresh,) = entries(cache)                       # recorded again, in its place
    assert run_qemu(RunSpec(iterations=ITERATIONS)).record.reused == "cache"


@pytest.mark.qemu
@pytest.mark.skipif(not grub_available(), reason="GRUB i386-pc files are not installed")
def test_old_kernel_second_run_starts_at_the_workload_from_the_cache(lab_built, cache, no_leaks):
    folder = BUILD / "oldboot"
    spec = RunSpec(kernel=str(folder / "bzImage"), system_map=str(folder / "System.map"), iterations=ITERATIONS)
    first = run_qemu(spec)
    second = run_qemu(spec)
    assert second.record.reused == "cache" and second.mode.replay_start == "workload entry (snapshot)"
    assert counted(second) == counted(first) and second.checks_ok
    assert second.kernel.banner == first.kernel.banner               # the map still checked against the kernel


def test_the_digest_covers_qemu_machine_files_and_attendant():
    base = {"qemu": {"emulator": "i386", "version": "7.2.22", "sha256": "a", "firmware": {"bios-256k.bin": "b"}},
            "machine": {"append": "iterations=5", "memory_mb": 64}, "files": {"kernel.elf": {"sha256": "c", "size": 1}},
            "attendant": None}
    same = json.loads(json.dumps(base))
    assert digest_of(base) == digest_of(same) and describe_difference(base, same) is None
    for path, value, says in ((("qemu", "version"), "8.0.0", "QEMU is 8.0.0"),
                              (("qemu", "sha256"), "z", "executable changed"),
                              (("machine", "append"), "iterations=6", "append"),
                              (("files", "kernel.elf"), {"sha256": "d", "size": 1}, "kernel.elf changed"),
                              (("attendant",), "entry snapshot", "another way")):
        other = json.loads(json.dumps(base))
        target = other
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert digest_of(other) != digest_of(base) and says in describe_difference(base, other)


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(tmp_path, monkeypatch):
    import os
    from gdbfault.recordings.store import file_entry
    cache = RecordingCache(tmp_path / "c", limit=1 << 30)
    source = tmp_path / "src"
    source.mkdir()
    for n in range(4):
        (source / "guest.rr.gz").write_bytes(bytes([n]) * 1000)
        (source / "state.qcow2").write_bytes(b"s" * 100)
        guest = {"qemu": {}, "machine": {}, "files": {}, "attendant": n}
        manifest = {"schema": "gdbfault.recording/1", "digest": digest_of(guest), "guest": guest,
                    "log": {**file_entry(source / "guest.rr.gz"), "unpacked_size": 0},
                    "store": {**file_entry(source / "state.qcow2"), "snapshots": []}}
        write_manifest(source, manifest)
        entry = cache.put(source, manifest)
        os.utime(entry / "recording.json", (1000 + n, 1000 + n))      # used in this order: 0, 1, 2, 3 ...
    first = cache.entry(digest_of({"qemu": {}, "machine": {}, "files": {}, "attendant": 0}))
    os.utime(first / "recording.json", (2000, 2000))                  # ... then 0 again
    sizes = [size for _, size, _ in cache.entries()]
    cache.limit = sum(sizes) - min(sizes)                              # room for three
    cache.trim()
    kept = {json.loads((e / "recording.json").read_text())["guest"]["attendant"] for e in entries(tmp_path / "c")}
    assert kept == {0, 2, 3}            # the least recently used one went
    assert parse_size("2G") == 2 << 30 and parse_size("500M") == 500 << 20 and parse_size("1048576") == 1 << 20
    with pytest.raises(GdbfaultError):
        parse_size("lots")
    monkeypatch.setenv("GDBFAULT_RECORDING_CACHE", "off")
    assert recording_cache() is None
    monkeypatch.setenv("GDBFAULT_RECORDING_CACHE", str(tmp_path / "x"))
    monkeypatch.setenv("GDBFAULT_RECORDING_CACHE_SIZE", "1M")
    assert recording_cache().limit == 1 << 20
