"""How a feature plugs into a backend: `RunHooks`, called at fixed moments of a run.

A backend measures; a feature (a live patch, today) adds to what happens
while it does, without the backend knowing the feature: the backend calls
the hooks of the `RunHooks` it was handed, and a feature overrides the ones
it needs. Every default does nothing, so `RunHooks()` is a plain run.

The moments, in order:
- `plugin_probes()` — the counting plugin's extra probes (plugin backend);
- `plugins()` — more TCG plugins (`-plugin` arguments) for the QEMU that runs
  the guest unobserved: the plugin backend's, the GDB backend's recording
  (or its live run, with no recording);
- `on_debugger(dbg, machine, recording)` — a GDB is attached with its probes
  loaded and the guest stopped before its first instruction (or, attached to
  a running QEMU, wherever it was stopped). `recording` is True in the
  recording run of a record/replay pair: a backend attaches GDB there only
  when `writes_guest` says the feature writes guest memory, because such
  writes are not part of a recording and must happen in both runs alike;
- `on_recorded(counts)` — that recording's in-GDB counts, once it ended;
- `watch(machine)` — about once a second while the counting run goes on;
  raise to end the run (e.g. a replay that stopped moving);
- `before_detach(dbg, failed)` — attached to a running QEMU: the window is
  over (`failed`: it ended in an error), the guest stopped: undo what the
  feature did that must not stay;
- `guest_restored(ok)` — attached, when GDB could not detach: the guest was
  put back without it (machine/rescue.py) — ok — or could not be;
- `finish(result, counts, plugin_counts)` — the run's counts are in
  `result`; add the feature's own part. `counts` is the in-GDB snapshot
  (None without GDB), `plugin_counts` the plugin's result (None without it).

`recording_inputs()` says what a feature that writes guest memory did to a
recording, and which files a later replay of it needs to do it again
(recordings are kept for `gdbfault inspect`).
"""

__all__ = ["RunHooks"]


class RunHooks:
    """A feature's part in a run (see the module docstring); the defaults do nothing."""

    #: the feature writes guest memory through GDB: a plugin run needs a GDB, and a
    #: recording needs one too (a recording has no debugger otherwise)
    writes_guest = False

    def plugin_probes(self):
        """[(address, kind, name)] for the counting plugin besides the run's probes."""
        return []

    def plugins(self):
        """QEMU arguments that load more TCG plugins into the run's unobserved QEMU (see above)."""
        return []

    def on_debugger(self, dbg, machine, recording=False):
        """GDB is attached to `machine` (a machine.qemu.Machine), the guest stopped."""

    def on_recorded(self, counts):
        """The recording run's in-GDB counts (only when `writes_guest`)."""

    def watch(self, machine):
        """About once a second while counting; raise a GdbfaultError to end the run."""

    def before_detach(self, dbg, failed=False):
        """Attached to a running QEMU: the counting window is over, the guest is stopped."""

    def guest_restored(self, ok):
        """Attached, GDB gone: the guest was put back through a new gdbstub connection (ok) or not."""

    def finish(self, result, counts=None, plugin_counts=None):
        """The run's counts are in `result` (a RunResult): add the feature's part."""

    def recording_inputs(self):
        """(what the feature's debugger writes were, in a phrase the recording's digest covers,
        [files a replay needs to write them again]); (None, []) for a feature that writes nothing."""
        return None, []

    def close(self):
        """The run is over, however it ended: let go of what the feature holds."""
