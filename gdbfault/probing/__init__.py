"""Probing a running guest: the in-GDB probe engine's session, the TCG plugin's probe list and result, and the one builder from what was counted to a RunResult."""
