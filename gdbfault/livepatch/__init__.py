"""Live patching: building replacement functions against the running kernel, and applying them mid-run through a backend's hooks."""
