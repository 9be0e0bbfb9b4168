"""Realistic session data of a chosen serialized size: what an auth portal keeps per user.

User name, display name, e-mails, groups, authentication level and Unix timestamps (ints),
a CSRF token, a redirect URL, an OIDC consent and a login history (strings and ints). The
same seed always gives the same data, so runs compare like with like.
"""

from __future__ import annotations

import random
import string
from typing import Any

import msgpack

#: The payload sizes every benchmark runs at (msgpack-serialized session data, bytes).
SIZES = (256, 1024, 16 * 1024)
#: The size the headline figures are taken at.
DEFAULT_SIZE = 1024

_T0 = 1_732_340_000
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"


def packed_size(data: dict[str, Any]) -> int:
    """Bytes of ``data`` serialized with msgpack."""
    return len(msgpack.packb(data))


def make_session(target: int, seed: int = 1) -> dict[str, Any]:
    """Return session data whose msgpack form is close to (never above) ``target`` bytes."""
    rng = random.Random(seed)

    def token(n: int) -> str:
        return "".join(rng.choice(_TOKEN_ALPHABET) for _ in range(n))

    data: dict[str, Any] = {
        "username": "john.doe",
        "display_name": "John Doe",
        "emails": ["john.doe@example.com"],
        "groups": ["admins", "dev"],
        "authentication_level": 2,
        "first_factor_at": _T0,
        "second_factor_at": _T0 + 12,
        "last_activity": _T0 + 97,
        "keep_me_logged_in": False,
        "csrf": token(43),
    }
    extras: list[tuple[str, Any]] = [
        ("redirect_url", "https://grafana.example.com/d/overview?orgId=1&refresh=30s"),
        ("emails", ["john.doe@example.com", "jdoe@corp.example.com", "john@example.org"]),
        ("remote_ip", "192.0.2.15"),
        ("user_agent", "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"),
        (
            "oidc",
            {
                "client_id": "grafana",
                "consent_id": token(22),
                "scopes": ["openid", "profile", "email", "groups"],
                "granted_at": _T0 + 40,
                "expires_at": _T0 + 40 + 2_592_000,
            },
        ),
        ("totp", {"registered": True, "last_used_at": _T0 + 12, "algorithm": "SHA1"}),
        ("locale", "en-GB"),
        ("timezone", "Europe/London"),
        ("login_history", []),
    ]
    for key, value in extras:
        trial = {**data, key: value}
        if packed_size(trial) > target:
            break
        data = trial
    # Fill up: login history entries (about 80 bytes each), then groups (about 16 bytes each).
    if "login_history" in data:
        i = 0
        while True:
            entry = {
                "at": _T0 - 86_400 * (i + 1) + rng.randrange(86_400),
                "ip": f"198.51.100.{rng.randrange(1, 255)}",
                "method": rng.choice(["totp", "webauthn", "duo", "password"]),
                "ok": rng.random() > 0.05,
            }
            data["login_history"].append(entry)
            if packed_size(data) > target - 200:
                data["login_history"].pop()
                break
            i += 1
    i = 0
    while True:
        data["groups"].append(f"team-{i:03d}-{token(6)}")
        if packed_size(data) > target:
            data["groups"].pop()
            break
        i += 1
    return data
