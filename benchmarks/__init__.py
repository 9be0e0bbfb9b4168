"""Benchmarks of the encrypt, serialize and store hot path: ``python -m benchmarks [--quick]``."""
