"""The one exception type the CLI turns into a one-line error."""

__all__ = ["GdbfaultError", "GuestError"]


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
