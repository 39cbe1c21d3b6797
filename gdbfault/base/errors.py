"""The exceptions the CLI turns into a one-line error and an exit code.

`GdbfaultError` (exit 2) and its subclasses — `GuestError` here (exit 3), the
run's `TimedOut` and `RunFailed` (which every backend raises), and others beside
the code that raises them (machine.gdbmi.GdbCommandError, analysis.check.spec.SpecError,
machine.plugins.PluginUnavailable, ...) — carry the message; `exit_code` says how
the CLI exits.
"""

__all__ = ["GdbfaultError", "GuestError", "TimedOut", "RunFailed"]


class GdbfaultError(Exception):
    """A problem the user can act on; str() is the whole one-line message.

    `exit_code` is what the CLI exits with (2 for bad input or a run that
    could not be carried out).
    """

    exit_code = 2

    def __init__(self, message, hint=None):
        super().__init__(message if not hint else f"{message} — {hint}")


class GuestError(GdbfaultError):
    """The guest itself went wrong: an oops, a panic, a hang, or it died."""

    exit_code = 3


class TimedOut(GuestError):
    """The whole run (record, replay and all) did not end within --timeout."""


class RunFailed(GdbfaultError):
    """A run that ended early; `.result` holds what was measured until then (a RunResult)."""

    def __init__(self, cause, result):
        super().__init__(str(cause))
        self.cause = cause
        self.result = result
        self.exit_code = getattr(cause, "exit_code", 2)
