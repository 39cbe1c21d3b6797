"""Unit tests of what puts a user's guest back without GDB (machine/rescue.py) and of the guardian
that acts when gdbfault is SIGKILLed (machine/guardian.py). The end-to-end cases, with real QEMUs,
are in test_attach_running.py."""
import os
import socket
import threading
import time
from types import SimpleNamespace

from gdbfault.machine import guardian
from gdbfault.machine.rescue import GuestRestore, restore_guest, undo_hint


class FakeStub(threading.Thread):
    """A gdbstub that speaks just enough of the protocol, as QEMU 7.2 does: a stop reply of its own when a
    connection stops a running guest, `D` refused once a debugger asked for multiprocess (E22)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.memory = {0xC01013B0: bytes.fromhex("e90b9d0000")}
        self.detached = False
        self.start()

    def _send(self, conn, body):
        data = body.encode()
        conn.sendall(b"$" + data + b"#%02x" % (sum(data) & 0xFF))

    def run(self):
        conn, _ = self.server.accept()
        self._send(conn, "T02thread:p01.01;")          # the guest it stopped, said unasked
        buf = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
            while b"#" in buf and len(buf) >= buf.index(b"#") + 3:
                start, end = buf.index(b"$"), buf.index(b"#")
                body, buf = buf[start + 1:end].decode(), buf[end + 3:]
                conn.sendall(b"+")
                if body == "?":
                    self._send(conn, "T05thread:p01.01;")
                elif body.startswith("M"):
                    where, data = body[1:].split(":")
                    address = int(where.split(",")[0], 16)
                    self.memory[address] = bytes.fromhex(data)
                    self._send(conn, "OK")
                elif body.startswith("m"):
                    address, size = (int(x, 16) for x in body[1:].split(","))
                    self._send(conn, self.memory.get(address, b"\0" * size)[:size].hex())
                elif body == "D":
                    self._send(conn, "E22")
                elif body == "D;1":
                    self.detached = True
                    self._send(conn, "OK")


def test_a_new_gdbstub_connection_writes_the_old_entry_back_and_detaches(tmp_path):
    stub = FakeStub(tmp_path / "gdb.sock")
    restore = GuestRestore(str(tmp_path / "gdb.sock"), writes=[(0xC01013B0, bytes.fromhex("5589e583ec"))],
                           functions=[("do_page_fault", 0xC01013B0)])
    ok, text = restore_guest(restore, attempts_s=2)
    assert ok is True and "old entries of do_page_fault put back" in text
    assert stub.memory[0xC01013B0] == bytes.fromhex("5589e583ec") and stub.detached


def test_a_gone_qemu_and_a_silent_one_are_told_apart(tmp_path):
    ok, text = restore_guest(GuestRestore(str(tmp_path / "none.sock")), attempts_s=1)
    assert ok is None and "is gone: nothing to put back" in text
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(1)                    # (like a gdbstub still held by a dead GDB's connection)
    restore = GuestRestore(str(tmp_path / "silent.sock"), writes=[(0xC01013B0, b"\x55\x89\xe5\x83\xec")],
                           functions=[("do_page_fault", 0xC01013B0)])
    t0 = time.monotonic()
    ok, text = restore_guest(restore, attempts_s=1)
    assert ok is False and time.monotonic() - t0 < 12
    assert "do_page_fault at 0xc01013b0 left patched" in text and "\n" not in text
    assert "set {unsigned char[5]}0xc01013b0 = {0x55, 0x89, 0xe5, 0x83, 0xec}" in text
    assert undo_hint(restore) in text
    silent.close()


def test_qmp_is_found_on_the_qemu_command_line():
    from gdbfault.backends.running_qemu import qmp_of_process
    def proc(*argv):
        return SimpleNamespace(pid=os.getpid(), cmdline=lambda: ["qemu-system-i386", *argv])
    assert qmp_of_process(proc("-qmp", "unix:/run/q.sock,server=on,wait=off")) == "/run/q.sock"
    assert qmp_of_process(proc("-chardev", "socket,id=m0,path=/run/m.sock,server=on,wait=off",
                               "-mon", "chardev=m0,mode=control")) == "/run/m.sock"
    assert qmp_of_process(proc("-chardev", "socket,id=m0,path=/run/m.sock,server=on",
                               "-mon", "chardev=m0,mode=readline")) is None
    assert qmp_of_process(proc("-qmp", "unix:q.sock,server=on")) == os.path.join(os.getcwd(), "q.sock")
    assert qmp_of_process(None) is None


def test_the_guardian_undoes_only_when_gdbfault_dies(tmp_path):
    """Told `done`, it leaves everything; its pipe closed without it (gdbfault killed), it removes
    the folders it was told of."""
    kept, removed = tmp_path / "kept", tmp_path / "removed"
    kept.mkdir()
    removed.mkdir()
    try:
        guardian.enable()
        guardian.watch_dir(kept)
        proc = guardian._state["proc"]
        guardian.finish()
        assert proc.poll() is not None and kept.is_dir()
        guardian.enable()
        guardian.watch_dir(removed)
        proc = guardian._state["proc"]
        guardian._state["pipe"].close()            # as the kernel closes it when gdbfault is SIGKILLed
        proc.wait(10)
        assert not removed.exists() and kept.is_dir()
    finally:
        guardian._state.update(enabled=False, proc=None, pipe=None)


def test_without_enable_nothing_is_started():
    guardian.watch_dir("/nowhere")
    guardian.watch_guest("k", GuestRestore("/nowhere"))
    assert guardian._state["proc"] is None
