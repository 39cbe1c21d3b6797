"""The GDB side of a run: one `Debugger` = one `gdb --interpreter=mi3 -nx`.

pygdbmi spawns GDB and parses its MI output. Every command we send carries a
token; one reader thread takes all of GDB's output and hands each result
record to the command with the same token, so no reply is lost or matched to
the wrong command however long a command takes. Asynchronous records
(`*stopped`, `*running`, `=thread-group-exited`) go to a queue of their own.

Per-hit work never comes here: the probes count inside GDB (gdbscripts/) and
this module only asks them for summaries.
"""
import queue
import select
import shutil
import threading
import time

from pygdbmi.gdbcontroller import GdbController

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.lifecycle import shielded
from gdbfault.base.tools import find_tool, parent_death_prefix, tool_version

__all__ = ["Debugger", "GdbCommandError", "gdb_version", "mi_quote"]


class GdbCommandError(GdbfaultError):
    """GDB answered a command with ^error."""


def mi_quote(text):
    """Quote a string as an MI c-string argument."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gdb_version(gdb="gdb"):
    return tool_version(gdb, r"GNU gdb .*?(\d+\.\d+(\.\d+)?)")


def _no_core_dumps():
    """GDB can hit an internal error when QEMU dies under it; no core file, please."""
    try:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, ValueError, OSError):
        pass


class _Pending:
    __slots__ = ("event", "record", "console")

    def __init__(self):
        self.event = threading.Event()
        self.record = None
        self.console = []


class Debugger:
    """A GDB process driven over MI, with token-matched commands."""

    def __init__(self, gdb="gdb"):
        exe = find_tool(gdb)
        _no_core_dumps()
        # A session of its own (setsid), so the user's Ctrl-C reaches only
        # gdbfault, which then stops the run in order.
        prefix = ([shutil.which("setsid")] if shutil.which("setsid") else []) + parent_death_prefix()
        self._ctl = GdbController(command=prefix + [exe, "--interpreter=mi3", "-nx", "-q"])
        self._next_token = 1
        self._pending = {}
        self._current = None            # the command whose console output we collect
        self._lock = threading.Lock()   # one command in flight at a time
        self.events = queue.Queue()     # async records: *stopped, *running, =thread-group-exited
        self.log = []                   # GDB's own log lines (&"..."), for error messages
        self._dead = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="gdb-mi-reader", daemon=True)
        self._reader.start()

    # -- the one reader ----------------------------------------------------
    def _read_loop(self):
        io = self._ctl.io_manager
        while not self._dead.is_set():
            try:
                # Wait for output ourselves, then take what is there at once:
                # get_gdb_response(timeout) would sit out its whole timeout even
                # after a reply came, and set-up is a few dozen round trips.
                select.select(io.read_list, [], [], 0.05)
                records = io.get_gdb_response(timeout_sec=0, raise_error_on_timeout=False)
            except Exception:   # GDB's pipes closed: it exited or was killed
                break
            for rec in records:
                self._dispatch(rec)
            if self._ctl.gdb_process is not None and self._ctl.gdb_process.poll() is not None:
                for rec in self._drain(io):
                    self._dispatch(rec)
                break
        self._dead.set()
        for p in list(self._pending.values()):
            p.event.set()

    @staticmethod
    def _drain(io):
        try:
            return io.get_gdb_response(timeout_sec=0, raise_error_on_timeout=False)
        except Exception:
            return []

    def _dispatch(self, rec):
        kind = rec.get("type")
        if kind == "result":
            pending = self._pending.get(rec.get("token"))
            if pending is not None and rec.get("message") != "running":
                pending.record = rec
                pending.event.set()
            elif rec.get("message") == "running":
                self.events.put(rec)
                if pending is not None:
                    pending.record = rec
                    pending.event.set()
        elif kind == "console":
            cur = self._current
            if cur is not None:
                cur.console.append(rec.get("payload") or "")
        elif kind == "log":
            self.log.append((rec.get("payload") or "").strip())
            del self.log[:-50]
        elif kind == "notify":
            self.events.put(rec)

    # -- commands ------------------------------------------------------------
    @property
    def alive(self):
        return not self._dead.is_set()

    def mi(self, command, timeout=30.0):
        """Send one MI command; return (result record, console text)."""
        with self._lock:
            if not self.alive:
                raise GdbfaultError(f"GDB is not running (it died or was killed); last message: "
                                    f"{self.last_log() or 'none'}")
            token = self._next_token
            self._next_token += 1
            pending = _Pending()
            self._pending[token] = pending
            self._current = pending
            try:
                try:
                    self._ctl.write(f"{token}{command}", read_response=False)
                except OSError:          # broken pipe: GDB is gone
                    self._dead.wait(2)
                    raise GdbfaultError(f"GDB died before `{command}` could be sent; last message: "
                                        f"{self.last_log() or 'none'}")
                if not pending.event.wait(timeout):
                    raise GdbfaultError(f"GDB did not answer `{command}` within {timeout:.0f} s")
            finally:
                self._pending.pop(token, None)
                self._current = None
        rec = pending.record
        if rec is None:
            raise GdbfaultError(f"GDB died while running `{command}`; last message: "
                                f"{self.last_log() or 'none'}")
        if rec.get("message") == "error":
            msg = (rec.get("payload") or {}).get("msg", "unknown error")
            raise GdbCommandError(f"GDB: {msg}")
        return rec, "".join(pending.console)

    def console(self, cli_command, timeout=30.0):
        """Run a CLI command through MI; return what it printed."""
        _, text = self.mi(f"-interpreter-exec console {mi_quote(cli_command)}", timeout)
        return text

    def last_log(self):
        return next((l for l in reversed(self.log) if l), "")

    def wait_event(self, predicate, timeout):
        """The next async record for which predicate(rec) is true, or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                rec = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if not self.alive:
                    return None
                continue
            if predicate(rec):
                return rec

    @property
    def pid(self):
        proc = self._ctl.gdb_process
        return proc.pid if proc else None

    def close(self):
        """Ask GDB to exit; kill it if it does not. No signal cuts it short."""
        with shielded():
            proc = self._ctl.gdb_process
            if proc is not None and proc.poll() is None:
                try:
                    self._ctl.write("-gdb-exit", read_response=False)
                    proc.wait(3)
                except Exception:
                    pass
            try:
                self._ctl.exit()
            except Exception:
                pass
            self._dead.set()
            self._reader.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
