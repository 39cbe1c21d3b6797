"""`gdbfault check`: a TOML spec of runs and expectations, evaluated to pass/fail, rendered as a table, JSON or JUnit XML."""
