"""Tests of redis_session; ``tests.servers`` starts the real Redis servers they use."""
