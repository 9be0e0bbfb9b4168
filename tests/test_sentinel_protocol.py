"""The Sentinel protocol's pure parts as tables: ``parse_event`` and ``explain``.

The messages are what a sentinel publishes (redis.io's Sentinel documentation gives the
formats); the real servers in ``test_sentinel*.py`` check that they are read off the wire.
"""

from __future__ import annotations

from typing import Any

import pytest

from redis_session._sentinel import Address, Answer, Event, explain, parse_event

NAME = "mymaster"
OLD = ("10.0.0.1", 6379)
NEW = ("10.0.0.2", 6380)

EVENTS: list[tuple[str, Any, Event | None]] = [
    (
        "switch-master",
        ["message", "+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6380"],
        Event("switched", NEW, OLD),
    ),
    (
        "selected-slave",
        [
            "message",
            "+selected-slave",
            "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379",
        ],
        Event("selected", NEW, OLD),
    ),
    (
        "promoted-slave",
        [
            "message",
            "+promoted-slave",
            "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379",
        ],
        Event("promoted", NEW, OLD),
    ),
    (
        "abort: not elected",
        ["message", "-failover-abort-not-elected", "master mymaster 10.0.0.1 6379"],
        Event("aborted", None, OLD),
    ),
    (
        "abort: no good slave",
        ["message", "-failover-abort-no-good-slave", "master mymaster 10.0.0.1 6379"],
        Event("aborted", None, OLD),
    ),
    (
        "abort: slave timeout",
        ["message", "-failover-abort-slave-timeout", "master mymaster 10.0.0.1 6379"],
        Event("aborted", None, OLD),
    ),
    (
        "IPv6 addresses",
        ["message", "+switch-master", "mymaster ::1 6379 fe80::2 6380"],
        Event("switched", ("fe80::2", 6380), ("::1", 6379)),
    ),
    # Not ours or not an event: ignored.
    (
        "another master's switch",
        ["message", "+switch-master", "other 10.0.0.1 6379 10.0.0.2 6380"],
        None,
    ),
    (
        "another master's selection",
        ["message", "+selected-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ other 10.0.0.1 6379"],
        None,
    ),
    (
        "another master's abort",
        ["message", "-failover-abort-not-elected", "master other 10.0.0.1 6379"],
        None,
    ),
    ("subscribe confirmation", ["subscribe", "+switch-master", 1], None),
    ("PING reply", "PONG", None),
    ("pong in a list", ["pong", ""], None),
    ("four parts", ["message", "+switch-master", "x", "y"], None),
    ("unknown channel", ["message", "+sdown", "master mymaster 10.0.0.1 6379"], None),
    ("switch, too few fields", ["message", "+switch-master", "mymaster 10.0.0.1 6379"], None),
    (
        "switch, port not a number",
        ["message", "+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 x"],
        None,
    ),
    (
        "selection, too few fields",
        ["message", "+selected-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster"],
        None,
    ),
    (
        "selection, port not a number",
        ["message", "+promoted-slave", "slave a b c @ mymaster 10.0.0.1 6379"],
        None,
    ),
    ("abort, too few fields", ["message", "-failover-abort-not-elected", "master mymaster"], None),
    (
        "abort, port not a number",
        ["message", "-failover-abort-slave-timeout", "master mymaster 10.0.0.1 p"],
        None,
    ),
]


@pytest.mark.parametrize(("message", "event"), [e[1:] for e in EVENTS], ids=[e[0] for e in EVENTS])
def test_parse_event(message: Any, event: Event | None) -> None:
    """Failover events about our master are read; anything else is None, never an error."""
    assert parse_event(message, NAME) == event


def ok(sentinel: str, master: Address = OLD) -> Answer:
    return Answer(sentinel, master=master, epoch=1)


def unreachable(sentinel: str) -> Answer:
    return Answer(sentinel, "unreachable", problem="timed out")


EXPLAINED: list[tuple[str, list[Answer], dict[Address, str], str]] = [
    (
        "a rejected candidate, no sentinel problem",
        [ok("s1:1"), ok("s2:2")],
        {NEW: "ROLE says slave, not master"},
        "the sentinels name 10.0.0.2:6380 as master of 'mymaster', but ROLE says slave, not master",
    ),
    (
        "a rejected candidate, with sentinel problems",
        [ok("s1:1"), unreachable("s2:2")],
        {("::1", 6379): "timed out"},
        "the sentinels name [::1]:6379 as master of 'mymaster', but timed out "
        "(sentinel problems: s2:2: timed out)",
    ),
    (
        "the first rejected candidate only",
        [ok("s1:1")],
        {OLD: "first", NEW: "second"},
        "the sentinels name 10.0.0.1:6379 as master of 'mymaster', but first",
    ),
    (
        "authentication failed",
        [unreachable("s1:1"), Answer("s2:2", "auth", problem="authentication to s2:2 failed")],
        {},
        "authentication to s2:2 failed",
    ),
    (
        "no sentinel knows the name",
        [Answer("s1:1", "unknown", problem="no"), Answer("s2:2", "unknown", problem="no")],
        {},
        "no sentinel knows a master named 'mymaster' "
        "(check session.redis.high_availability.sentinel_name); asked s1:1, s2:2",
    ),
    (
        "none reachable",
        [unreachable("s1:1"), unreachable("s2:2")],
        {},
        "no sentinel reachable to find master 'mymaster': s1:1: timed out; s2:2: timed out",
    ),
    (
        "a mix of problems",
        [unreachable("s1:1"), Answer("s2:2", "error", problem="not a sentinel")],
        {},
        "cannot find the master 'mymaster' through Sentinel: s1:1: timed out; s2:2: not a sentinel",
    ),
    (
        "an auth answer without a problem text is no auth reason",
        [Answer("s1:1", "auth"), unreachable("s2:2")],
        {},
        "cannot find the master 'mymaster' through Sentinel: s2:2: timed out",
    ),
]


@pytest.mark.parametrize(
    ("answers", "rejected", "text"), [e[1:] for e in EXPLAINED], ids=[e[0] for e in EXPLAINED]
)
def test_explain(answers: list[Answer], rejected: dict[Address, str], text: str) -> None:
    """Why no master was found: a rejected candidate first, then auth, then the sentinels."""
    assert explain(NAME, answers, rejected) == text
