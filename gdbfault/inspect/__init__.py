"""Opening one fault of a run's kept recording: `gdbfault inspect`, and the report's outlier lines."""
