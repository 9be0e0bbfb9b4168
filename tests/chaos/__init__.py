"""Fault injection under mixed load: proxy, load driver, scenarios (``nox -s chaos``)."""
