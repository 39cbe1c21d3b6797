"""Recordings kept after a run: what made the guest run (the digest), the kept folder, the cache."""
