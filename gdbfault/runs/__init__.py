"""Carrying out runs: one run (resolve it, plug features in, hand it to a backend), a run on a QEMU already running, several runs at once."""
