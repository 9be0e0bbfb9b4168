"""Example apps built on redis_session (run from the repository's root)."""
