"""What several numbers or runs say together: metrics by name, compare (before/after), check (a TOML spec of expectations), backend cross-checks."""
