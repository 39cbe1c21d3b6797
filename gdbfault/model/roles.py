"""The roles a probe plays on the fault path, by the names reports, path shapes and ground truth use.

A probe profile (kernels/profiles) maps each role to the symbols that play
it in one kernel family; users add roles of their own with --probe
ROLE=SYMBOL. The four roles below are the ones gdbfault knows the meaning
of: the path classifier (paths.py) names shapes by them and the ground
truth (truth.py) predicts their counts.
"""
from gdbfault.base.errors import GdbfaultError

__all__ = ["ENTRY", "SEARCH", "SIGNAL", "RESOLVED", "USER_FAULT", "parse_probe_option"]

ENTRY = "fault entry"
SEARCH = "exception search"
SIGNAL = "signal forced"
RESOLVED = "fault resolved"
# modern Linux's do_user_addr_fault: a step every user-address fault takes, not a shape of its own
USER_FAULT = "user fault"


def parse_probe_option(text):
    """'ROLE=SYMBOL' (or just 'SYMBOL', role = symbol) -> (role, symbol)."""
    role, sep, symbol = text.partition("=")
    if not sep:
        role, symbol = text, text
    role, symbol = role.strip(), symbol.strip()
    if not role or not symbol:
        raise GdbfaultError(f"bad --probe '{text}'", "write it as ROLE=SYMBOL, e.g. 'signal forced=force_sig'")
    return role, symbol
