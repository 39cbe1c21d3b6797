"""A watcher that outlives a SIGKILLed gdbfault: it puts an attached guest back and removes gdbfault's temp folders.

A SIGKILL (or the OOM killer) runs none of gdbfault's teardown. Its QEMU
and GDB die with it (parent-death signal, base/tools.py), but that left two
things behind: the run's folders in $TMPDIR (`gdbfault-run-*`, and
`gdbfault-rec-*` with a 1.6 MB recording), and — attached to a QEMU the
user started — a guest stopped at the next probe hit (GDB's breakpoints
stay in QEMU) and, with `--live-patch`, still patched.

So the command line starts this guardian once a run makes something to
undo (`enable()` at the start of a command, the process itself on the
first `watch_*` call): a small Python process in a session of its own
(no terminal signal reaches it), told over a pipe what to undo — folders
(`watch_dir`) and attached guests with the bytes to put back
(`watch_guest`, a machine.rescue.GuestRestore, sent before any byte is
written). gdbfault says `done` when it ends by itself, however it ends; the
guardian then exits and does nothing. If the pipe closes without `done`,
gdbfault was killed: the guardian puts every watched guest back through a
new gdbstub connection (machine/rescue.py: it waits for the dead GDB's
connection to close), removes the folders (unless `--keep-run-dir`, when it
names them), says so on gdbfault's stderr in one line each, and exits.

Library use (tests, scripts) never enables it: nothing changes there.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["enable", "watch_dir", "watch_guest", "forget_guest", "finish", "serve"]

_lock = threading.Lock()
_state = {"enabled": False, "keep_dirs": False, "proc": None, "pipe": None}


def enable(keep_dirs=False):
    """This process is a gdbfault command: watch what it makes from now on (the guardian starts lazily)."""
    _state.update(enabled=True, keep_dirs=bool(keep_dirs))


def _start():
    """The guardian process (under _lock); None when it cannot start (then nothing is watched)."""
    if _state["proc"] is not None or not _state["enabled"]:
        return _state["proc"]
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=package_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", "from gdbfault.machine.guardian import serve; serve()"],
                                stdin=read_end, stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError:
        os.close(read_end)
        os.close(write_end)
        _state["enabled"] = False
        return None
    os.close(read_end)
    _state.update(proc=proc, pipe=os.fdopen(write_end, "w", buffering=1))
    _send_locked({"keep_dirs": _state["keep_dirs"], "pid": os.getpid()})
    return proc


def _send_locked(message):
    pipe = _state["pipe"]
    if pipe is None:
        return
    try:
        pipe.write(json.dumps(message) + "\n")
        pipe.flush()
    except (OSError, ValueError):          # the guardian is gone: nothing to tell
        pass


def _send(message):
    with _lock:
        if _start() is not None:
            _send_locked(message)


def watch_dir(path):
    """Remove `path` if gdbfault is killed before it removes it itself."""
    if _state["enabled"]:
        _send({"dir": str(path)})


def watch_guest(key, restore):
    """Put this attached guest back (a machine.rescue.GuestRestore) if gdbfault is killed; call again
    with more bytes before each write."""
    if _state["enabled"]:
        _send({"guest": key, "restore": restore.to_json()})


def forget_guest(key):
    """The guest was left as it should be: nothing to do for it any more."""
    if _state["enabled"] and _state["proc"] is not None:
        _send({"forget": key})


def finish():
    """gdbfault ends by itself: the guardian does nothing and exits."""
    with _lock:
        proc, pipe = _state["proc"], _state["pipe"]
        _state["enabled"] = False
        if pipe is not None:
            _send_locked("done")
            try:
                pipe.close()
            except OSError:
                pass
        _state.update(proc=None, pipe=None)
    if proc is not None:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the guardian process itself ---------------------------------------------------------

def _say(text):
    try:
        sys.stderr.write(f"gdbfault (guardian): {text}\n")
        sys.stderr.flush()
    except OSError:
        pass


def serve():
    """The guardian's main: read what to watch until `done` (exit) or the end of the pipe (act)."""
    import signal
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)   # only the end of the pipe ends it
    dirs, guests, keep_dirs, owner = [], {}, False, None
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message == "done":
            return
        if not isinstance(message, dict):
            continue
        if "keep_dirs" in message:
            keep_dirs, owner = message["keep_dirs"], message.get("pid")
        elif "dir" in message:
            dirs.append(message["dir"])
        elif "guest" in message:
            guests[message["guest"]] = message["restore"]
        elif "forget" in message:
            guests.pop(message["forget"], None)
    _after_a_kill(dirs, guests, keep_dirs, owner)


def _after_a_kill(dirs, guests, keep_dirs, owner):
    """gdbfault died without saying done: undo what it left."""
    from gdbfault.machine.rescue import GuestRestore, restore_guest
    who = f"gdbfault (pid {owner})" if owner else "gdbfault"
    for restore in guests.values():
        ok, text = restore_guest(GuestRestore.from_json(restore), attempts_s=15.0)
        _say(f"{who} was killed while attached to {restore['address']}: {text}")
    time.sleep(0.5)                    # its QEMU and GDB are going (parent-death signal)
    left = [d for d in dict.fromkeys(dirs) if os.path.exists(d)]
    if keep_dirs and left:
        _say(f"{who} was killed; its folders are kept (--keep-run-dir): {' '.join(left)}")
        return
    for folder in left:
        shutil.rmtree(folder, ignore_errors=True)
