"""Authelia 4.38's session section, next to the seed's older one (issue 11, item 1).

Authelia's own examples load unchanged and without a warning; the seed's shape loads with one
FutureWarning and means the same; cookie domains are checked for what they are; the new redis
options work against real servers (inline client certificate over TLS, an ACL user on the
sentinels).
"""

from __future__ import annotations

import tempfile
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from redis_session import (
    ConfigError,
    StoreUnavailable,
    load_config,
    open_session_store,
    resolve_config,
)
from redis_session._config import REMEMBER_ME_DISABLED, CookieConfig, SessionConfig
from tests.servers import RedisProcess, SentinelCluster, TLSFiles
from tests.test_config import SEED_SESSION_YAML

pytestmark = pytest.mark.anyio

# Authelia's session documentation (docs/content/en/configuration/session/introduction.md,
# 4.38+), as published.
AUTHELIA_INTRODUCTION = """
session:
  secret: insecure_session_secret

  name: authelia_session
  same_site: lax
  inactivity: 5m
  expiration: 1h
  remember_me: 1M

  cookies:
    - name: authelia_session
      domain: example.com
      same_site: lax
      inactivity: 5m
      expiration: 1h
      remember_me: 1d
"""
# Authelia's 4.38 release notes: the same session "before" (the seed's shape) and "after".
AUTHELIA_BEFORE = """
default_redirection_url: 'https://www.example.com'
session:
  name: 'authelia_session'
  domain: 'example.com'
  same_site: 'lax'
  secret: 'insecure_session_secret'
  expiration: '1h'
  inactivity: '5m'
  remember_me_duration: '1M'
"""
AUTHELIA_AFTER = """
session:
  secret: 'insecure_session_secret'
  name: 'authelia_session'
  same_site: 'lax'
  inactivity: '5m'
  expiration: '1h'
  remember_me: '1M'
  cookies:
    - domain: 'example.com'
      authelia_url: 'https://auth.example.com'
      default_redirection_url: 'https://www.example.com'
"""


def load_quietly(text: str) -> SessionConfig:
    """Load YAML text that must give no warning at all (pytest turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_config(yaml.safe_load(text))


def problems(document: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(document)
    return [str(problem) for problem in info.value.problems]


# -- the two shapes ----------------------------------------------------------------------------


def test_authelia_documentation_example_loads_unchanged() -> None:
    cfg = load_quietly(AUTHELIA_INTRODUCTION)
    assert cfg.same_site == "lax"
    assert cfg.remember_me == timedelta(days=30)
    assert cfg.cookies == (
        CookieConfig(
            domain="example.com",
            name="authelia_session",
            same_site="lax",
            expiration=timedelta(hours=1),
            inactivity=timedelta(minutes=5),
            remember_me=timedelta(days=1),
        ),
    )


def test_authelia_release_notes_before_and_after_mean_the_same() -> None:
    after = load_quietly(AUTHELIA_AFTER)
    with pytest.warns(FutureWarning) as record:
        before = load_config(yaml.safe_load(AUTHELIA_BEFORE))
    assert len(record) == 1
    text = str(record[0].message)
    assert "session.domain (use session.cookies)" in text
    assert "session.remember_me_duration (use session.remember_me)" in text
    # The URLs are Authelia's portal settings: accepted, kept, not used here.
    entry = after.cookies[0]
    assert entry.authelia_url == "https://auth.example.com"
    assert before.cookies == (
        CookieConfig(
            domain=entry.domain,
            name=entry.name,
            same_site=entry.same_site,
            expiration=entry.expiration,
            inactivity=entry.inactivity,
            remember_me=entry.remember_me,
        ),
    )
    assert before.domain is None
    assert before.remember_me_duration is None
    assert before.remember_me == after.remember_me


def test_the_seed_example_loads_with_one_warning() -> None:
    with pytest.warns(FutureWarning) as record:
        cfg = load_config(yaml.safe_load(SEED_SESSION_YAML))
    assert len(record) == 1
    assert [entry.domain for entry in cfg.cookies] == ["example.com"]
    # A loaded configuration loaded again (or opened) does not warn a second time.
    assert resolve_config(cfg) == cfg


def test_only_the_deprecated_key_used_is_named() -> None:
    with pytest.warns(FutureWarning) as record:
        load_config({"remember_me_duration": "2d"})
    assert len(record) == 1
    assert "session.remember_me_duration" in str(record[0].message)
    assert "session.domain" not in str(record[0].message)


def test_old_and_new_key_together_are_refused() -> None:
    assert problems({"domain": "example.com", "cookies": [{"domain": "example.com"}]}) == [
        "session.domain: is deprecated and cannot be used with cookies; keep only session.cookies"
    ]
    assert problems({"remember_me_duration": "1d", "remember_me": "2d"}) == [
        "session.remember_me_duration: is deprecated and cannot be used with remember_me;"
        " keep only session.remember_me"
    ]


def test_python_built_configs_follow_the_same_rules() -> None:
    with pytest.warns(FutureWarning):
        cfg = resolve_config(SessionConfig(domain="example.com"))
    assert cfg.cookies[0].name == "authelia_session"
    with pytest.raises(ConfigError, match=r"session\.cookies\[0\]\.domain: 'co\.uk'"):
        resolve_config(SessionConfig(cookies=(CookieConfig(domain="co.uk"),)))


# -- entries inherit the top level --------------------------------------------------------------


def test_entries_take_unset_options_from_the_top_level() -> None:
    cfg = load_config(
        {
            "name": "top",
            "same_site": "strict",
            "expiration": "2h",
            "inactivity": "10m",
            "remember_me": "-1",
            "cookies": [
                {"domain": "example.com"},
                {"domain": "example.org", "name": "own", "same_site": "none", "remember_me": "3d"},
            ],
        }
    )
    first, second = cfg.cookies
    assert first == CookieConfig(
        domain="example.com",
        name="top",
        same_site="strict",
        expiration=timedelta(hours=2),
        inactivity=timedelta(minutes=10),
        remember_me=REMEMBER_ME_DISABLED,
    )
    assert (second.name, second.same_site, second.remember_me) == ("own", "none", timedelta(days=3))
    assert second.expiration == timedelta(hours=2)


def test_an_empty_cookies_list_is_a_host_only_cookie() -> None:
    assert load_quietly("session: {cookies: []}").cookies == ()


# -- remember_me -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "-1", -5, timedelta(seconds=-30)])
def test_a_negative_remember_me_disables_it(value: object) -> None:
    assert load_config({"remember_me": value}).remember_me == REMEMBER_ME_DISABLED
    entry = load_config({"cookies": [{"domain": "example.com", "remember_me": value}]}).cookies[0]
    assert entry.remember_me == REMEMBER_ME_DISABLED


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be longer than zero; write -1 to disable remember-me"),
        ("0s", "must be longer than zero; write -1 to disable remember-me"),
        ("101y", "must be at most 100y, got 101y"),
        ("soon", "cannot read 'soon' as a duration"),
    ],
)
def test_remember_me_limits(value: object, message: str) -> None:
    (found,) = problems({"remember_me": value})
    assert found.startswith(f"session.remember_me: {message}")
    entry = {"domain": "example.com", "remember_me": value}
    (found,) = problems({"cookies": [entry]})
    assert found.startswith(f"session.cookies[0].remember_me: {message}")


def test_entry_clocks_are_limited_too() -> None:
    entry = {"domain": "example.com", "expiration": "200y", "inactivity": 0}
    assert problems({"cookies": [entry]}) == [
        "session.cookies[0].expiration: must be at most 100y, got 200y",
        "session.cookies[0].inactivity: must be longer than zero",
    ]


# -- same_site and cookie names -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["lax", "strict", "none"])
def test_same_site_values(value: str) -> None:
    assert load_config({"same_site": value}).same_site == value


def test_same_site_is_checked_as_authelia_does() -> None:
    # Authelia compares exactly (lower case); the message says how to fix it.
    assert problems({"same_site": "Strict"}) == [
        "session.same_site: must be one of lax, strict or none, got 'Strict';"
        " write it in lower case: 'strict'"
    ]
    assert problems({"cookies": [{"domain": "example.com", "same_site": "always"}]}) == [
        "session.cookies[0].same_site: must be one of lax, strict or none, got 'always'"
    ]


def test_entry_cookie_name_is_a_token() -> None:
    assert problems({"cookies": [{"domain": "example.com", "name": "a b"}]}) == [
        "session.cookies[0].name: 'a b' is not a valid cookie name"
        " (use letters, digits and !#$%&'*+-.^_`|~)"
    ]


def test_entry_options_are_known_and_typed() -> None:
    found = problems({"cookies": [{"domain": "example.com", "domian": "x", "authelia_url": 5}]})
    assert "session.cookies[0].authelia_url: expected a string, got an integer" in found
    assert "session.cookies[0].domian: unknown option (did you mean 'domain'?)" in found
    assert problems({"cookies": [{"name": "x"}]}) == ["session.cookies[0].domain: is required"]
    assert problems({"cookies": ["example.com"]}) == [
        "session.cookies[0]: expected a mapping of options, got a string"
    ]


# -- cookie domains ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("https://example.com", "'https://example.com' is a URL"),
        ("example.com:443", "'example.com:443' has a port"),
        ("example.com/path", "'example.com/path' has a path"),
        ("com", "'com' has no '.'"),
        ("co.uk", "'co.uk' is a public suffix"),
        ("github.io", "'github.io' is a public suffix"),
        ("*.example.com", "'*.example.com' is a wildcard; give the domain itself ('example.com')"),
        (".example.com", "'.example.com' starts with '.'"),
        ("example.com.", "'example.com.' ends with '.'"),
        ("", "must not be empty"),
        (" example.com", "has spaces around it"),
        ("exa_mple.com", "is not a valid domain name"),
        ("-example.com", "is not a valid domain name"),
        ("a..example.com", "has an empty label"),
        ("x" * 64 + ".example.com", "has a label of 64 characters"),
        (("a" * 60 + ".") * 5 + "com", "a domain name has at most 253"),
        ("exämple.com", "give an internationalised name in its xn-- form"),
        ("10.0.0.300", "is neither a valid IPv4 address nor a domain name"),
        ("[::1]", "give an IPv6 address without brackets: '::1'"),
        ("127.0.0.1:80", "has a port"),
    ],
)
def test_bad_cookie_domains_name_the_option(domain: str, message: str) -> None:
    (found,) = problems({"cookies": [{"domain": "example.org"}, {"domain": domain}]})
    assert found.startswith("session.cookies[1].domain: ")
    assert message in found
    # The seed's single domain is checked by the same rules.
    (found,) = problems({"domain": domain})
    assert found.startswith("session.domain: ")


@pytest.mark.parametrize(
    "domain",
    ["example.com", "app.example.co.uk", "me.github.io", "127.0.0.1", "::1", "EXAMPLE.org"],
)
def test_good_cookie_domains(domain: str) -> None:
    assert load_config({"cookies": [{"domain": domain}]}).cookies[0].domain == domain


def test_overlapping_cookie_domains_are_refused() -> None:
    cookies = [
        {"domain": "example.com"},
        {"domain": "app.example.com"},
        {"domain": "Example.COM"},
        {"domain": "example.org"},
    ]
    found = problems({"cookies": cookies})
    assert found == [
        "session.cookies[1].domain: 'app.example.com' overlaps cookies[0].domain"
        " ('example.com'): a cookie for a domain is also sent to its subdomains, so a request"
        " would carry both; keep one of them",
        "session.cookies[2].domain: 'Example.COM' is also the domain of cookies[0]",
    ]
    # Neighbours that only share a suffix as text do not overlap.
    assert (
        len(load_config({"cookies": [{"domain": "ample.com"}, {"domain": "example.com"}]}).cookies)
        == 2
    )


# -- the 4.38 redis options --------------------------------------------------------------------


def test_redis_438_options_load() -> None:
    cfg = load_config(
        {
            "secret": "s",
            "redis": {
                "host": "redis",
                "max_retries": 3,
                "tls": {"maximum_version": "TLS1.3"},
                "high_availability": {
                    "sentinel_name": "mymaster",
                    "sentinel_username": "watcher",
                    "sentinel_password": "pw",
                },
            },
        }
    )
    assert cfg.redis is not None
    assert cfg.redis.max_retries == 3
    assert cfg.redis.high_availability is not None
    assert cfg.redis.high_availability.sentinel_username == "watcher"


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"max_retries": -1}, "session.redis.max_retries: must be at least 0, got -1"),
        ({"max_retries": "3"}, "session.redis.max_retries: expected an integer"),
        (
            {"high_availability": {"sentinel_name": "m", "sentinel_username": "u"}},
            "session.redis.high_availability.sentinel_password: is required with sentinel_username",
        ),
    ],
)
def test_redis_438_option_errors(redis: dict[str, Any], message: str) -> None:
    (found,) = problems({"secret": "s", "redis": {"host": "localhost", **redis}})
    assert found.startswith(message)


def client_pem(tls_files: TLSFiles) -> tuple[str, str]:
    chain = Path(tls_files.client_cert_file).read_text(encoding="ascii")
    key = Path(tls_files.client_key_file).read_text(encoding="ascii")
    return chain, key


def test_inline_and_file_certificates_are_exclusive(tls_files: TLSFiles) -> None:
    chain, key = client_pem(tls_files)
    tls = {
        "certificate_chain": chain,
        "private_key": key,
        "certificate_file": tls_files.client_cert_file,
        "key_file": tls_files.client_key_file,
    }
    found = problems({"secret": "s", "redis": {"host": "localhost", "tls": tls}})
    assert found == [
        "session.redis.tls.certificate_chain: cannot be used with certificate_file;"
        " give the client certificate either inline or as files",
        "session.redis.tls.private_key: cannot be used with key_file;"
        " give the client certificate either inline or as files",
    ]
    only_chain = {"secret": "s", "redis": {"host": "h", "tls": {"certificate_chain": chain}}}
    assert problems(only_chain) == [
        "session.redis.tls.private_key: is required with certificate_chain"
    ]


def test_pem_that_does_not_parse_is_named_and_never_echoed(tls_files: TLSFiles) -> None:
    chain, _ = client_pem(tls_files)
    secret_looking = "-----BEGIN PRIVATE KEY-----\nTOPSECRETbutbroken\n-----END PRIVATE KEY-----\n"
    tls = {"certificate_chain": "not a certificate", "private_key": secret_looking}
    with pytest.raises(ConfigError) as info:
        load_config({"secret": "s", "redis": {"host": "localhost", "tls": tls}})
    text = str(info.value)
    assert [str(p) for p in info.value.problems] == [
        "session.redis.tls.certificate_chain: is not a PEM certificate chain"
        " (-----BEGIN CERTIFICATE----- ...)",
        "session.redis.tls.private_key: is not a PEM private key (-----BEGIN PRIVATE KEY----- ...)",
    ]
    assert "TOPSECRET" not in text
    assert "TOPSECRET" not in repr(info.value)
    # A loaded key never shows in the config's repr either.
    _, key = client_pem(tls_files)
    cfg = load_config(
        {
            "secret": "s",
            "redis": {"host": "h", "tls": {"certificate_chain": chain, "private_key": key}},
        }
    )
    assert key.splitlines()[1] not in repr(cfg)


async def test_inline_client_certificate_against_a_real_mtls_server(
    mtls_redis: RedisProcess,
    tls_files: TLSFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain, key = client_pem(tls_files)
    section = mtls_redis.redis_section()
    del section["tls"]["certificate_file"], section["tls"]["key_file"]
    section["tls"].update(certificate_chain=chain, private_key=key)
    # The PEM goes through files only while OpenSSL reads them: none is left behind.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    async with open_session_store({"secret": "s", "redis": section}) as store:
        session = await store.create({"who": "mtls"})
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"who": "mtls"}
    assert list(scratch.iterdir()) == []


async def test_inline_key_of_another_certificate_is_named(
    tls_files: TLSFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, _ = client_pem(tls_files)
    other_key = (await anyio.Path(tls_files.untrusted_client_key_file).read_text()).strip()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    tls = {"ca_file": tls_files.ca_file, "certificate_chain": chain, "private_key": other_key}
    with pytest.raises(ConfigError) as info:
        async with open_session_store({"secret": "s", "redis": {"host": "127.0.0.1", "tls": tls}}):
            pass  # pragma: no cover - the context cannot be built
    assert str(info.value.problems[0]) == (
        "session.redis.tls.private_key: is not the private key of"
        " session.redis.tls.certificate_chain"
    )
    assert other_key.splitlines()[1] not in str(info.value)
    assert list(scratch.iterdir()) == []


async def test_sentinel_username_authenticates_to_the_sentinels(
    sentinel_cluster: SentinelCluster,
) -> None:
    for sentinel in sentinel_cluster.sentinels:
        sentinel.admin().acl_setuser(
            "watcher", enabled=True, passwords=["+watcher-pw"], commands=["+@all"], channels=["*"]
        )
    section = sentinel_cluster.redis_section()
    section["high_availability"].update(sentinel_username="watcher", sentinel_password="watcher-pw")
    async with open_session_store({"secret": "s", "redis": section}) as store:
        session = await store.create({"a": 1})
        assert await store.load(session.id) is not None
        users = {
            client.get("user")
            for sentinel in sentinel_cluster.sentinels
            for client in sentinel.our_clients()
        }
    assert "watcher" in users
    assert users <= {"watcher"}


async def test_a_wrong_sentinel_user_password_names_both_options(
    sentinel_cluster: SentinelCluster,
) -> None:
    for sentinel in sentinel_cluster.sentinels:
        sentinel.admin().acl_setuser(
            "watcher", enabled=True, passwords=["+watcher-pw"], commands=["+@all"]
        )
    section = sentinel_cluster.redis_section(timeout="2s")
    section["high_availability"].update(sentinel_username="watcher", sentinel_password="wrong")
    with pytest.raises(StoreUnavailable) as info:
        async with open_session_store({"secret": "s", "redis": section}):
            pass  # pragma: no cover - the sentinels refuse us
    text = str(info.value)
    assert "authentication to sentinel" in text
    assert (
        "check session.redis.high_availability.sentinel_username and"
        " session.redis.high_availability.sentinel_password"
    ) in text


@pytest.mark.parametrize(("max_retries", "tries"), [(0, 3), (1, 2), (4, 5)])
async def test_max_retries_bounds_the_retries_of_a_single_server(
    redis_factory: Any, max_retries: int, tries: int
) -> None:
    """A command the server drops every time is sent 1 + max_retries times (0: 1 + 2).

    The server closes any connection whose query passes 1 MB, so every try of a 3 MB write
    loses its connection after sending, and each retry needs a new one: the server counts them.
    """
    proc = redis_factory(extra_conf=["client-query-buffer-limit 1mb"])
    section = proc.redis_section(max_retries=max_retries, timeout="10s")
    cfg = {"secret": "s" * 32, "maximum_data_size": 8_000_000, "redis": section}
    async with open_session_store(cfg) as store:
        await store.create({"small": 1})  # the first connection, opened and working
        before = int(proc.admin().info("stats")["total_connections_received"])
        dropped = r"Connection reset by peer|Broken pipe|Connection closed by server"
        with pytest.raises(StoreUnavailable, match=dropped):
            await store.create({"blob": "x" * 3_000_000})
        after = int(proc.admin().info("stats")["total_connections_received"])
    assert after - before == tries - 1


def test_private_key_from_a_file_variable(tls_files: TLSFiles) -> None:
    chain, key = client_pem(tls_files)
    document = {"secret": "s", "redis": {"host": "h", "tls": {"certificate_chain": chain}}}
    environ = {"REDIS_SESSION_REDIS_TLS_PRIVATE_KEY_FILE": tls_files.client_key_file}
    tls = load_config(document, environ=environ).redis.tls  # type: ignore[union-attr]
    assert tls is not None
    assert tls.private_key is not None
    assert tls.private_key.get_secret_value() == key.removesuffix("\n")
