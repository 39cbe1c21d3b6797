"""How a gdbfault command ends: every stop signal takes the same teardown path.

SIGINT (Ctrl-C), SIGTERM (a CI cancel, `timeout`) and SIGHUP (a closed
terminal or ssh session) all raise `Stopped`, a KeyboardInterrupt that
carries the signal, in the main thread. So one set of `except`/`finally`
blocks saves the partial counts and tears QEMU and GDB down whatever the
cause, and the command exits 128 + the signal's number (130, 143, 129).

QEMU and GDB run in sessions of their own (so a terminal's signals reach
only us and we stop them in order); that makes their teardown our job, also
for runs that work in other threads (`compare`, `check`). Those poll
`check_stop()`, which raises `Stopped` in their thread once a signal came.

While the main thread tears parts down (`with shielded():`), a signal is
recorded but not raised, so a second Ctrl-C cannot cut a teardown in half;
the command still ends with that signal's exit code.
"""
import contextlib
import signal
import threading

__all__ = ["Stopped", "STOP_SIGNALS", "install_handlers", "restore_handlers", "check_stop",
           "stop_signal", "pending_signal", "request_stop", "reset", "shielded", "signal_label"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signal_label(signum):
    """'SIGTERM', or 'SIGINT (Ctrl-C)' for the one a person types."""
    name = signal.Signals(signum).name
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


class Stopped(KeyboardInterrupt):
    """gdbfault was told to stop by a signal; exit with 128 + its number."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self):
        return 128 + self.signum

    @property
    def label(self):
        return signal_label(self.signum)

    def __str__(self):
        return f"stopped by {self.label}"


_stop = threading.Event()
_state = {"signum": None, "raised": False, "shield": 0}


def _on_signal(signum, frame):
    if _state["signum"] is None:
        _state["signum"] = signum
    _stop.set()
    # Raise once, in the main thread; later signals (a second Ctrl-C while
    # we tear down) only confirm the stop.
    if not _state["raised"] and _state["shield"] == 0:
        _state["raised"] = True
        raise Stopped(signum)


def install_handlers():
    """Route the stop signals to `Stopped`; returns what to restore afterwards."""
    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, _on_signal)
        except (ValueError, OSError):      # not the main thread, or no such signal here
            pass
    return previous


def restore_handlers(previous):
    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError, TypeError):
            pass


def request_stop(signum=signal.SIGINT):
    """Tell every run to stop (the main thread caught a signal some other way)."""
    if _state["signum"] is None:
        _state["signum"] = int(signum)
    _stop.set()


def stop_signal():
    """The signal that stopped gdbfault, or None."""
    return _state["signum"]


def pending_signal():
    """A signal that came but was never raised (it landed in a shielded teardown)."""
    return None if _state["raised"] else _state["signum"]


def check_stop():
    """Raise `Stopped` in this thread when a stop signal has come."""
    if _stop.is_set():
        raise Stopped(_state["signum"] or signal.SIGINT)


def reset():
    """Forget a stop (a new command in the same process, e.g. a test)."""
    _stop.clear()
    _state.update(signum=None, raised=False, shield=0)


@contextlib.contextmanager
def shielded():
    """No `Stopped` is raised in the main thread inside this block (teardown)."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        _state["shield"] += 1
    try:
        yield
    finally:
        if main:
            _state["shield"] -= 1
