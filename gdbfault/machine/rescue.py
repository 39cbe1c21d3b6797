"""Putting a user's guest back as it was found when gdbfault's GDB is gone: a fresh gdbstub connection, QMP.

gdbfault attached to a QEMU it did not start may have written into the guest
(a live patch: replacement code, then a `jmp` over each old entry) and left
breakpoints in QEMU. Normally its GDB takes both out before detaching. When
that GDB is gone — killed, crashed, wedged — the guest is left stopped (the
next breakpoint hit stops it for good: QMP `query-status` says `debug`) and
patched. What QEMU 7.2 offers to undo that without GDB:

- its gdbstub takes a new connection once the old one is closed. Over it,
  GDB's remote protocol (`GdbStub`, below: a few dozen lines, no GDB
  needed) writes memory (`M`), reads it back to check (`m`) and detaches
  (`D`), which removes every breakpoint of the old connection and resumes
  the guest. QEMU writes such bytes through its debug path, which also
  drops any translated code of the page, so the guest runs the bytes put
  back at once. The bytes to write are known before the patch goes in: the
  caller records (address, old bytes) of every write first (`GuestRestore`).
- QMP has no command that writes guest memory in 7.2 (HMP's `x`, `xp`,
  `memsave`, `pmemsave` only read), but `cont` resumes a guest and
  `query-status` says whether it runs: used when the gdbstub path cannot
  resume it, and to confirm the result.

When nothing works, `restore_guest` says so in one line: what is left
patched (function, address, the old bytes) and how to put them back by hand.
"""
import socket
import time
from dataclasses import dataclass, field

__all__ = ["GdbStub", "StubError", "GuestRestore", "restore_guest", "settle", "qmp_status", "qmp_command",
           "undo_hint"]


class StubError(Exception):
    """The gdbstub did not answer as expected (or not at all)."""


class GdbStub:
    """A minimal client of GDB's remote serial protocol, enough to write memory and detach.

    Connecting to QEMU's gdbstub stops the guest (QEMU pauses the VM when a
    debugger connects; one that was running reports the stop at once, which
    the replies below skip)."""

    def __init__(self, address, timeout=3.0):
        self.timeout = timeout
        if ":" in address and not address.startswith("/"):
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host or "localhost", int(port)), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address)
            except OSError:
                self.sock.close()
                raise
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _packet(self):
        """The next packet's body (acks and noise skipped); it is acknowledged."""
        deadline = time.monotonic() + self.timeout
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                body, self.buf = self.buf[start + 1:end], self.buf[end + 3:]
                self.sock.sendall(b"+")
                return body.decode("ascii", "replace")
            if time.monotonic() > deadline:
                raise StubError("the gdbstub did not answer")
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise StubError("the gdbstub did not answer") from None
            if not chunk:
                raise StubError("the gdbstub closed the connection")
            self.buf += chunk

    def request(self, body, stop_reply=False):
        """Send one packet; its reply. A stop reply (`T..`/`S..`) that comes first is skipped unless
        asked for: QEMU sends one on its own when a connection stops a running guest."""
        data = body.encode("ascii")
        self.sock.sendall(b"$" + data + b"#%02x" % (sum(data) & 0xFF))
        while True:
            reply = self._packet()
            if stop_reply or reply[:1] not in ("T", "S"):
                return reply

    def stop_reason(self):
        return self.request("?", stop_reply=True)

    def read(self, address, size):
        reply = self.request(f"m{address:x},{size:x}")
        if reply.startswith("E") and len(reply) == 3:
            raise StubError(f"cannot read {size} bytes at {address:#x} ({reply})")
        return bytes.fromhex(reply)

    def write(self, address, data):
        reply = self.request(f"M{address:x},{len(data):x}:{data.hex()}")
        if reply != "OK":
            raise StubError(f"cannot write {len(data)} bytes at {address:#x} ({reply or 'no reply'})")

    def detach(self):
        """Detach: QEMU removes every breakpoint and resumes the guest. QEMU wants `D;PID` once a
        debugger asked for multiprocess (GDB does), and the setting outlives that debugger."""
        for packet in ("D", "D;1"):
            if self.request(packet) == "OK":
                return
        raise StubError("the gdbstub refused to detach")


@dataclass
class GuestRestore:
    """What to put back in a guest gdbfault attached to, known before anything is changed."""

    address: str                    # its gdbstub: a unix socket path or host:port
    qmp: str = None                 # a QMP unix socket of the same QEMU, if one was found
    writes: list = field(default_factory=list)       # [(guest address, old bytes)] in the order to write
    functions: list = field(default_factory=list)    # [(name, entry address)] a live patch replaced
    was_running: bool = True        # how it was found (QMP); a stopped guest is stopped again

    def to_json(self):
        return {"address": self.address, "qmp": self.qmp, "writes": [[a, b.hex()] for a, b in self.writes],
                "functions": [list(f) for f in self.functions], "was_running": self.was_running}

    @classmethod
    def from_json(cls, d):
        return cls(d["address"], d.get("qmp"), [(a, bytes.fromhex(b)) for a, b in d.get("writes", [])],
                   [tuple(f) for f in d.get("functions", [])], d.get("was_running", True))


def qmp_command(socket_path, command, timeout=3.0, **arguments):
    """One QMP command on a unix socket, its return value. Bounded in time (a QMP socket that another
    client holds accepts and then never greets); raises on any failure."""
    import asyncio
    from qemu.qmp import QMPClient

    async def run():
        client = QMPClient("gdbfault-rescue")
        try:
            await asyncio.wait_for(client.connect(str(socket_path)), timeout)
            return await asyncio.wait_for(client.execute(command, arguments or None), timeout)
        finally:
            await client.disconnect()
    loop = asyncio.new_event_loop()        # its own loop: the caller's (if any) is left alone
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def qmp_status(socket_path):
    """QMP query-status of a QEMU ('running', 'paused', 'debug', ...), or None when it cannot be asked."""
    if not socket_path:
        return None
    try:
        reply = qmp_command(socket_path, "query-status")
    except Exception:              # no QMP there, it is busy with another client, QEMU is gone
        return None
    return reply.get("status") if isinstance(reply, dict) else None


def undo_hint(restore):
    """How to put the old entry bytes back by hand, with plain gdb (one line)."""
    entries = {a for _, a in restore.functions}
    writes = [(a, b) for a, b in restore.writes if a in entries] or restore.writes[:4]
    sets = " ".join(f"-ex 'set {{unsigned char[{len(b)}]}}{a:#x} = {{{', '.join(f'{x:#04x}' for x in b)}}}'"
                    for a, b in writes)
    return f"gdb -batch -ex 'set architecture i386' -ex 'target remote {restore.address}' {sets} -ex detach"


def settle(restore):
    """After a detach: the guest as it was found — running, or stopped again if it was stopped
    (paused, not started yet) — when a QMP socket can say; returns the QMP status (None without QMP)."""
    status = qmp_status(restore.qmp)
    command = None
    if restore.was_running and status is not None and status != "running":
        command = "cont"
    elif not restore.was_running and status == "running":
        command = "stop"
    if command is not None:
        try:
            qmp_command(restore.qmp, command)
            status = qmp_status(restore.qmp)
        except Exception:          # reported as the status QMP gave
            pass
    return status


def restore_guest(restore, attempts_s=10.0):
    """Write the old bytes back and let the guest run, without gdbfault's GDB (see the module docstring).

    Returns (ok, text): ok is True when it was done, False when it could not be (text: what is left
    and how to undo it, one line), None when the QEMU is gone (nothing to put back). Retries the
    gdbstub for `attempts_s`: it takes a new connection only once the old one is closed."""
    deadline = time.monotonic() + attempts_s
    error = None
    while True:
        try:
            with GdbStub(restore.address, timeout=5.0) as stub:
                stub.stop_reason()
                for address, data in restore.writes:
                    stub.write(address, data)
                    if stub.read(address, len(data)) != data:
                        raise StubError(f"the bytes at {address:#x} did not take")
                stub.detach()
            break
        except (FileNotFoundError, ConnectionRefusedError):
            return None, f"the QEMU at {restore.address} is gone: nothing to put back"
        except (OSError, StubError, ValueError) as exc:
            error = exc
            if time.monotonic() >= deadline:
                return False, _left_behind(restore, error)
            time.sleep(0.2)
    status = settle(restore)
    what = (f"old entries of {', '.join(n for n, _ in restore.functions)} put back, " if restore.functions
            else "")
    state = f"QMP says '{status}'" if status else "resumed by the detach"
    return True, f"guest put back as found through a new gdbstub connection ({what}breakpoints removed; {state})"


def _left_behind(restore, error):
    """The one line when the guest could not be put back: what is left, how to undo it."""
    status = qmp_status(restore.qmp)
    if status in ("paused", "debug") and restore.was_running:
        try:
            qmp_command(restore.qmp, "cont")
            status = qmp_status(restore.qmp)
        except Exception:
            pass
    state = f"QMP says '{status}'" if status else "it may be stopped (no QMP socket to ask)"
    if restore.writes:
        names = ", ".join(f"{n} at {a:#x}" for n, a in restore.functions) or \
            ", ".join(f"{a:#x}" for a, _ in restore.writes)
        return (f"could not put the guest back ({error}): {names} left patched, {state}; to undo: "
                f"{undo_hint(restore)}")
    return (f"could not detach from the guest ({error}): breakpoints may be left in QEMU, {state}; to undo: "
            f"gdb -batch -ex 'target remote {restore.address}' -ex detach")
