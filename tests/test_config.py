"""Configuration loading and checking: load_config, validate_config, resolve_config."""

from __future__ import annotations

import copy
import ssl
import sys
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import redis_session
from redis_session._config import (
    REMEMBER_ME_DISABLED,
    CookieConfig,
    HighAvailabilityConfig,
    NodeConfig,
    RedisConfig,
    Secret,
    SessionConfig,
    TLSConfig,
)
from redis_session._config_loading import (
    SECRET_FILE_VARIABLES,
    _yaml_loader,
    load_config,
    resolve_config,
    validate_config,
)
from redis_session._durations import parse_duration
from redis_session._errors import ConfigError, ConfigProblem

# The example of the session seed (Authelia's session documentation), as published.
SEED_SESSION_YAML = """\
session:
  name: authelia_session
  secret: unsecure_session_secret
  expiration: 1h
  inactivity: 5m
  remember_me_duration:  1M
  domain: example.com
  redis:
    host: 127.0.0.1
    port: 6379
    username: authelia
    password: authelia
    database_index: 0
    maximum_active_connections: 8
    minimum_idle_connections: 0
    tls:
      server_name: myredis.example.com
      skip_verify: false
      minimum_version: TLS1.2
    high_availability:
      sentinel_name: mysentinel
      sentinel_password: sentinel_specific_pass
      nodes:
        - host: sentinel-node1
          port: 26379
        - host: sentinel-node2
          port: 26379
      route_by_latency: false
      route_randomly: false
"""

# The example of the redis seed with its indentation restored (plus the secret it needs).
SEED_REDIS_YAML = """\
session:
  secret: a_secret
  redis:
    host: 127.0.0.1
    port: 6379
    username: authelia
    password: authelia
    database_index: 0
    maximum_active_connections: 8
    minimum_idle_connections: 0
    tls:
      server_name: myredis.example.com
      skip_verify: false
      minimum_version: TLS1.2
    high_availability:
      sentinel_name: mysentinel
      sentinel_password: sentinel_specific_pass
      nodes:
        - host: sentinel-node1
          port: 26379
        - host: sentinel-node2
          port: 26379
      route_by_latency: false
      route_randomly: false
"""

SECRET = "S3CRET-do-not-print-7f3a"  # a marker searched for in error messages
NO_ENV: dict[str, str] = {}


def load(source: Any, environ: dict[str, str] | None = None) -> SessionConfig:
    return load_config(source, environ=NO_ENV if environ is None else environ)


def structured_problems_of(
    source: Any, environ: dict[str, str] | None = None
) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        load(source, environ)
    return info.value.problems


def problems_of(source: Any, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The problems as the lines the user reads, ``path: message``."""
    return tuple(str(problem) for problem in structured_problems_of(source, environ))


def with_option(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy ``base`` (a minimal valid Redis config) with the dotted ``path`` set to ``value``."""
    doc = copy.deepcopy(base or {"secret": "s", "redis": {"host": "localhost"}})
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return doc


def check_seed_values(cfg: SessionConfig) -> None:
    assert cfg.name == "authelia_session"
    assert cfg.secret is not None
    assert cfg.secret.get_secret_value() == "unsecure_session_secret"
    assert cfg.expiration == timedelta(hours=1)
    assert cfg.inactivity == timedelta(minutes=5)
    # The seed's deprecated options, mapped to Authelia 4.38's (with a FutureWarning).
    assert cfg.remember_me == timedelta(days=30)
    assert cfg.remember_me_duration is None
    assert cfg.domain is None
    assert cfg.cookies == (
        CookieConfig(
            domain="example.com",
            name="authelia_session",
            same_site="lax",
            expiration=timedelta(hours=1),
            inactivity=timedelta(minutes=5),
            remember_me=timedelta(days=30),
        ),
    )
    check_seed_redis(cfg.redis)


def check_seed_redis(redis: RedisConfig | None) -> None:
    assert redis is not None
    assert redis.host == "127.0.0.1"
    assert redis.port == 6379
    assert redis.username == "authelia"
    assert redis.password is not None
    assert redis.password.get_secret_value() == "authelia"
    assert redis.database_index == 0
    assert redis.maximum_active_connections == 8
    assert redis.minimum_idle_connections == 0
    assert redis.tls == TLSConfig(
        server_name="myredis.example.com",
        skip_verify=False,
        minimum_version=ssl.TLSVersion.TLSv1_2,
    )
    ha = redis.high_availability
    assert ha is not None
    assert ha.sentinel_name == "mysentinel"
    assert ha.sentinel_password is not None
    assert ha.sentinel_password.get_secret_value() == "sentinel_specific_pass"
    assert ha.nodes == (NodeConfig("sentinel-node1", 26379), NodeConfig("sentinel-node2", 26379))
    assert ha.route_by_latency is False
    assert ha.route_randomly is False


# -- the seeds -----------------------------------------------------------------------------------


def test_session_seed_loads_from_a_yaml_file(tmp_path: Path) -> None:
    """The session seed's full example, read from a file, gives every value it states."""
    path = tmp_path / "configuration.yml"
    path.write_text(SEED_SESSION_YAML)
    with pytest.warns(FutureWarning, match="session.domain"):
        check_seed_values(load(path))
    with pytest.warns(FutureWarning, match="session.remember_me_duration"):
        check_seed_values(load(str(path)))


def test_session_seed_loads_from_a_mapping() -> None:
    """The same example as a mapping, with or without the top-level session key, is equal."""
    document = yaml.safe_load(SEED_SESSION_YAML)
    with pytest.warns(FutureWarning):
        cfg = load(document)
    check_seed_values(cfg)
    with pytest.warns(FutureWarning):
        assert load(document["session"]) == cfg


def test_redis_seed_loads() -> None:
    """The redis seed's example with its indentation restored loads with every value."""
    cfg = load(yaml.safe_load(SEED_REDIS_YAML))
    check_seed_redis(cfg.redis)
    assert cfg.name == "authelia_session"


def test_redis_seed_as_published_is_rejected(tmp_path: Path) -> None:
    """The redis seed with its indentation lost fails loudly instead of being half read."""
    flat = "\n".join(line.strip() for line in SEED_REDIS_YAML.splitlines())
    path = tmp_path / "flat.yml"
    path.write_text(flat)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)  # the repeated "host:" keys


def test_lost_indentation_without_duplicates_is_rejected() -> None:
    """Session options beside a top-level session key are reported, not ignored."""
    problems = problems_of({"session": None, "redis": None, "secret": "x", "server": {}})
    assert problems == (
        "redis: is a session option; indent it under 'session:'",
        "secret: is a session option; indent it under 'session:'",
    )


# -- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [{}, None, {"session": None}, {"session": {}}])
def test_empty_documents_give_the_defaults(document: Any) -> None:
    """An empty document or session section gives the defaults and the memory provider."""
    assert load(document) == SessionConfig()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    """An empty YAML file is an empty configuration."""
    path = tmp_path / "empty.yml"
    path.write_text("# nothing here\n")
    assert load(path) == SessionConfig()


def test_session_defaults_match_the_seeds() -> None:
    """Defaults are Authelia's: authelia_session, 1h, 5m, 1M, no redis."""
    cfg = load({})
    assert cfg.name == "authelia_session"
    assert cfg.expiration == parse_duration("1h")
    assert cfg.inactivity == parse_duration("5m")
    assert cfg.remember_me == parse_duration("1M")
    assert cfg.remember_me_duration is None
    assert cfg.same_site == "lax"
    assert cfg.cookies == ()
    assert cfg.domain is None
    assert cfg.secret is None
    assert cfg.redis is None
    assert cfg.previous_secrets == ()
    assert cfg.maximum_data_size == 64 * 1024


def test_redis_defaults_match_the_seeds() -> None:
    """A redis section with only a host gets 6379, database 0, 8 and 0 connections."""
    redis = load({"secret": "s", "redis": {"host": "localhost"}}).redis
    assert redis == RedisConfig(host="localhost")
    assert redis.port == 6379
    assert redis.database_index == 0
    assert redis.maximum_active_connections == 8
    assert redis.minimum_idle_connections == 0
    assert redis.timeout == timedelta(seconds=5)
    assert redis.maximum_idle_time == timedelta(minutes=5)
    assert redis.tls is None
    assert redis.high_availability is None


def test_tls_and_sentinel_defaults() -> None:
    """Empty tls uses TLS1.2 with verification; nodes default to port 26379."""
    doc = {
        "secret": "s",
        "redis": {
            "host": "redis.example.com",
            "tls": {},
            "high_availability": {"sentinel_name": "m", "nodes": [{"host": "s1"}]},
        },
    }
    redis = load(doc).redis
    assert redis is not None
    assert redis.tls == TLSConfig(server_name="redis.example.com")
    assert redis.tls.skip_verify is False
    assert redis.tls.minimum_version is ssl.TLSVersion.TLSv1_2
    assert redis.high_availability == HighAvailabilityConfig(
        sentinel_name="m", nodes=(NodeConfig("s1"),)
    )
    assert redis.high_availability.nodes[0].port == 26379


@pytest.mark.parametrize(
    ("host", "server_name"),
    [
        ("redis.example.com", "redis.example.com"),
        ("10.0.0.1", "10.0.0.1"),
        ("[fd00:1111:2222:3333::1]", "fd00:1111:2222:3333::1"),
    ],
)
def test_server_name_defaults_to_host(host: str, server_name: str) -> None:
    """tls.server_name takes the host, without the brackets of an IPv6 literal."""
    redis = load({"secret": "s", "redis": {"host": host, "tls": {}}}).redis
    assert redis is not None
    assert redis.tls is not None
    assert redis.tls.server_name == server_name


def test_server_name_stays_unset_without_host() -> None:
    """With sentinels only, there is no host to take the server name from."""
    ha = {"sentinel_name": "m", "nodes": [{"host": "s1"}]}
    redis = load({"secret": "s", "redis": {"tls": {}, "high_availability": ha}}).redis
    assert redis is not None
    assert redis.tls == TLSConfig()


# -- every option --------------------------------------------------------------------------------


def test_every_option_including_extensions() -> None:
    """Every option of the model, Authelia's and the extensions, is read from YAML."""
    text = """
    session:
      name: my.session-1
      same_site: strict
      cookies:
        - domain: example.com
          authelia_url: https://auth.example.com
          default_redirection_url: https://www.example.com
          name: other
          same_site: none
          expiration: 3h
          inactivity: 1m
          remember_me: -1
        - domain: example.org
      secret: new
      previous_secrets: [old, older]
      expiration: 2h
      inactivity: 600
      remember_me: 1y
      maximum_data_size: 1024
      redis:
        host: "[fd00::1]"
        port: 6380
        username: app
        password: pw
        database_index: 3
        maximum_active_connections: 16
        minimum_idle_connections: 4
        timeout: 1500ms
        maximum_idle_time: 1m
        max_retries: 5
        tls:
          server_name: redis.internal
          skip_verify: true
          minimum_version: tls1.3
          maximum_version: TLS1.3
          ca_file: /etc/ca.pem
          certificate_file: /etc/client.pem
          key_file: /etc/client.key
        high_availability:
          sentinel_name: primary
          sentinel_username: watcher
          sentinel_password: spw
          nodes: [{host: 10.0.0.2, port: 26380}]
          route_by_latency: true
          route_randomly: true
    """
    cfg = load(yaml.safe_load(text))
    assert cfg == SessionConfig(
        name="my.session-1",
        same_site="strict",
        cookies=(
            CookieConfig(
                domain="example.com",
                authelia_url="https://auth.example.com",
                default_redirection_url="https://www.example.com",
                name="other",
                same_site="none",
                expiration=timedelta(hours=3),
                inactivity=timedelta(minutes=1),
                remember_me=REMEMBER_ME_DISABLED,
            ),
            CookieConfig(
                domain="example.org",
                name="my.session-1",
                same_site="strict",
                expiration=timedelta(hours=2),
                inactivity=timedelta(minutes=10),
                remember_me=timedelta(days=365),
            ),
        ),
        secret=Secret("new"),
        previous_secrets=(Secret("old"), Secret("older")),
        expiration=timedelta(hours=2),
        inactivity=timedelta(minutes=10),
        remember_me=timedelta(days=365),
        maximum_data_size=1024,
        redis=RedisConfig(
            host="[fd00::1]",
            port=6380,
            username="app",
            password=Secret("pw"),
            database_index=3,
            maximum_active_connections=16,
            minimum_idle_connections=4,
            timeout=timedelta(milliseconds=1500),
            maximum_idle_time=timedelta(minutes=1),
            max_retries=5,
            tls=TLSConfig(
                server_name="redis.internal",
                skip_verify=True,
                minimum_version=ssl.TLSVersion.TLSv1_3,
                maximum_version=ssl.TLSVersion.TLSv1_3,
                ca_file="/etc/ca.pem",
                certificate_file="/etc/client.pem",
                key_file="/etc/client.key",
            ),
            high_availability=HighAvailabilityConfig(
                sentinel_name="primary",
                sentinel_username="watcher",
                sentinel_password=Secret("spw"),
                nodes=(NodeConfig("10.0.0.2", 26380),),
                route_by_latency=True,
                route_randomly=True,
            ),
        ),
    )


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("TLS1.0", ssl.TLSVersion.TLSv1),
        ("TLS1.1", ssl.TLSVersion.TLSv1_1),
        ("TLS1.2", ssl.TLSVersion.TLSv1_2),
        ("TLS1.3", ssl.TLSVersion.TLSv1_3),
        ("tls1.2", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
    ],
)
def test_tls_version_names(name: str, version: ssl.TLSVersion) -> None:
    """Authelia's TLS version names are read case-insensitively."""
    redis = load(with_option("redis.tls", {"minimum_version": name})).redis
    assert redis is not None
    assert redis.tls is not None
    assert redis.tls.minimum_version is version


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "redis.example.com",
        "redis.example.com.",
        "my_redis",
        "127.0.0.1",
        "[fd00:1111:2222:3333::1]",
        "[::1]",
        "/run/redis/redis.sock",
    ],
)
def test_host_forms(host: str) -> None:
    """A host may be a name, an IPv4 address, a bracketed IPv6 literal or a socket path."""
    redis = load(with_option("redis.host", host)).redis
    assert redis is not None
    assert redis.host == host


def test_certificate_file_may_hold_the_key() -> None:
    """A client certificate without key_file is accepted: one PEM may hold both."""
    redis = load(with_option("redis.tls", {"certificate_file": "/etc/client.pem"})).redis
    assert redis is not None
    assert redis.tls is not None
    assert redis.tls.key_file is None


def test_sentinel_nodes_without_host() -> None:
    """With high_availability, nodes alone are enough; host is optional."""
    ha = {"sentinel_name": "m", "nodes": [{"host": "[::1]", "port": 26379}]}
    redis = load({"secret": "s", "redis": {"high_availability": ha}}).redis
    assert redis is not None
    assert redis.host is None


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    """YAML merge keys work; a key overriding a merged one is not a duplicate."""
    path = tmp_path / "merge.yml"
    path.write_text(
        "base: &base {host: localhost, port: 6380}\n"
        "session:\n  secret: s\n  redis:\n    <<: *base\n    port: 6381\n"
    )
    redis = load(path).redis
    assert redis == RedisConfig(host="localhost", port=6381)


# -- invalid options: one problem each, naming the path ------------------------------------------

S = "session."
TLS: dict[str, Any] = {"secret": "s", "redis": {"host": "localhost", "tls": {}}}
HA: dict[str, Any] = {
    "secret": "s",
    "redis": {"host": "localhost", "high_availability": {"sentinel_name": "m"}},
}
NODE = {"host": "s1"}


@pytest.mark.parametrize(
    ("path", "value", "base", "problem"),
    [
        ("name", "", None, "session.name: '' is not a valid cookie name"),
        ("name", "a;b", None, "session.name: 'a;b' is not a valid cookie name"),
        ("name", 5, None, "session.name: expected a string, got an integer"),
        ("name", None, None, "session.name: expected a string, got nothing (null)"),
        ("domain", "", None, "session.domain: must not be empty"),
        ("secret", "", None, "session.secret: must not be empty"),
        ("secret", 123456, None, "session.secret: expected a string, got an integer"),
        ("secret", None, None, "session.secret: is required when redis is configured"),
        ("expiration", "0s", None, "session.expiration: must be longer than zero"),
        ("expiration", "soon", None, "session.expiration: cannot read 'soon' as a duration"),
        ("inactivity", 0, None, "session.inactivity: must be longer than zero"),
        ("remember_me_duration", 0, None, "session.remember_me_duration: must be longer than zero"),
        ("remember_me_duration", True, None, "session.remember_me_duration: expected a duration"),
        ("remember_me", 0, None, "session.remember_me: must be longer than zero"),
        ("remember_me", "soon", None, "session.remember_me: cannot read 'soon' as a duration"),
        ("same_site", "lox", None, "session.same_site: must be one of lax, strict or none"),
        ("domain", "https://example.com", None, "session.domain: 'https://example.com' is a URL"),
        ("maximum_data_size", 0, None, "session.maximum_data_size: must be at least 1, got 0"),
        ("previous_secrets", "old", None, "session.previous_secrets: expected a list, got a str"),
        ("previous_secrets", ["a", ""], None, "session.previous_secrets[1]: must not be empty"),
        ("hots", 1, None, "session.hots: unknown option"),
        ("host", "x", None, "session.host: unknown option ('host' is an option of session.redis"),
        ("expiraton", "1h", None, "session.expiraton: unknown option (did you mean 'expiration'?)"),
        ("redis", None, None, "session.redis: is empty; give its options"),
        ("redis", "localhost", None, "session.redis: expected a mapping of options, got a string"),
        ("redis", ["localhost"], None, "session.redis: expected a mapping of options, got a list"),
        ("redis.port", 70000, None, "session.redis.port: must be between 1 and 65535, got 70000"),
        ("redis.port", 0, None, "session.redis.port: must be between 1 and 65535, got 0"),
        ("redis.port", "6379", None, "session.redis.port: expected an integer, got the string"),
        ("redis.port", 6379.0, None, "session.redis.port: expected an integer, got 6379.0"),
        ("redis.port", True, None, "session.redis.port: expected an integer, got a boolean"),
        ("redis.port", None, None, "session.redis.port: expected an integer, got nothing"),
        ("redis.port", "sixty", None, "session.redis.port: expected an integer, got a string"),
        ("redis.port", [1], None, "session.redis.port: expected an integer, got a list"),
        ("redis.prot", 6379, None, "session.redis.prot: unknown option (did you mean 'port'?)"),
        ("redis.database_index", -1, None, "session.redis.database_index: must be at least 0"),
        ("redis.maximum_active_connections", 0, None, "connections: must be at least 1, got 0"),
        ("redis.minimum_idle_connections", -1, None, "idle_connections: must be at least 0"),
        (
            "redis.minimum_idle_connections",
            9,
            None,
            "session.redis.minimum_idle_connections: must not exceed "
            "maximum_active_connections (8), got 9",
        ),
        ("redis.timeout", "0s", None, "session.redis.timeout: must be longer than zero"),
        ("redis.maximum_idle_time", 0, None, "session.redis.maximum_idle_time: must be longer"),
        ("redis.username", "", None, "session.redis.username: must not be empty"),
        ("redis.password", "", None, "session.redis.password: must not be empty"),
        ("redis.password", True, None, "session.redis.password: expected a string"),
        ("redis.host", None, None, "session.redis.host: is required"),
        ("redis.host", "", None, "session.redis.host: must not be empty"),
        ("redis.host", 6379, None, "session.redis.host: expected a string, got an integer"),
        ("redis.host", "fd00::1", None, 'must be in square brackets and quoted: "[fd00::1]"'),
        ("redis.host", "[fd00::zz]", None, "'[fd00::zz]' is not a valid IPv6 address in brackets"),
        ("redis.host", "[fd00::1", None, "is not a host name, an IPv4 address or a bracketed"),
        ("redis.host", "redis:6379", None, "'redis:6379' includes a port; give the port in"),
        ("redis.host", "300.1.1.1", None, "'300.1.1.1' is not a valid IPv4 address"),
        ("redis.host", "bad host", None, "or an absolute unix socket path"),
        ("redis.host", "-bad.example", None, "is not a host name"),
        ("redis.host", "a" * 64 + ".example", None, "is not a host name"),
        ("redis.tls", None, None, "session.redis.tls: is empty; write 'tls: {}'"),
        ("redis.tls", True, None, "session.redis.tls: expected a mapping of options"),
        ("redis.tls.skip_verify", "false", TLS, "skip_verify: expected true or false, got a str"),
        ("redis.tls.skip_verify", 0, TLS, "skip_verify: expected true or false, got an integer"),
        ("redis.tls.minimum_version", "SSL3.0", TLS, "minimum_version: must not be below TLS1.0"),
        ("redis.tls.minimum_version", "TLS1.4", TLS, "expected one of TLS1.0, TLS1.1, TLS1.2"),
        ("redis.tls.minimum_version", 1.2, TLS, "expected one of TLS1.0, TLS1.1, TLS1.2, TLS1.3"),
        (
            "redis.tls.maximum_version",
            "TLS1.1",
            TLS,
            "session.redis.tls.maximum_version: must not be below minimum_version (TLS1.2), "
            "got TLS1.1",
        ),
        ("redis.tls.key_file", "k.pem", TLS, "tls.certificate_file: is required with key_file"),
        ("redis.tls.ca_file", "", TLS, "session.redis.tls.ca_file: must not be empty"),
        ("redis.tls.server_name", "", TLS, "server_name: must not be empty"),
        ("redis.tls.server_name", "[::1]", TLS, "give an IPv6 address without brackets here"),
        ("redis.tls.server_name", "no way", TLS, "server_name: 'no way' is not a valid host"),
        ("redis.tls.server", "x", TLS, "tls.server: unknown option (did you mean 'server_name'?)"),
        ("redis.high_availability", None, None, "high_availability: is empty; give sentinel_name"),
        ("redis.high_availability", {}, None, "high_availability.sentinel_name: is required"),
        ("redis.high_availability.sentinel_name", "", HA, "sentinel_name: must not be empty"),
        ("redis.high_availability.sentinel_password", "", HA, "sentinel_password: must not be"),
        ("redis.high_availability.nodes", "s1", HA, "nodes: expected a list, got a string"),
        ("redis.high_availability.nodes", {"host": "s1"}, HA, "nodes: expected a list, got a map"),
        ("redis.high_availability.nodes", [5], HA, "nodes[0]: expected a mapping of options"),
        ("redis.high_availability.nodes", [{}], HA, "nodes[0].host: is required"),
        ("redis.high_availability.nodes", [NODE, {"host": "/s"}], HA, "nodes[1].host: must be a"),
        ("redis.high_availability.nodes", [{"host": "s", "port": 0}], HA, "nodes[0].port: must be"),
        ("redis.high_availability.nodes", [{"host": "s", "x": 1}], HA, "nodes[0].x: unknown"),
        ("redis.high_availability.route_randomly", "yes", HA, "route_randomly: expected true"),
        ("redis.high_availability.route_randomy", True, HA, "(did you mean 'route_randomly'?)"),
    ],
)
def test_invalid_option(path: str, value: Any, base: Any, problem: str) -> None:
    """Each invalid option gives one ConfigError with one problem that names its path."""
    problems = problems_of(with_option(path, value, base))
    assert len(problems) == 1, problems
    assert problem in problems[0]
    assert problems[0].startswith(S)


@pytest.mark.parametrize(
    ("redis", "problem"),
    [
        ({}, "session.redis.host: is required"),
        ({"port": 6379}, "session.redis.host: is required"),
        (
            {"high_availability": {"sentinel_name": "m", "nodes": []}},
            "session.redis.host: is required unless high_availability.nodes lists a sentinel",
        ),
        (
            {"host": "/run/redis.sock", "tls": {}},
            "session.redis.tls: cannot be used with a unix socket host",
        ),
        (
            {"host": "/run/redis.sock", "high_availability": {"sentinel_name": "m"}},
            "session.redis.host: must be a sentinel's host name or address, not a socket",
        ),
    ],
)
def test_invalid_combination(redis: dict[str, Any], problem: str) -> None:
    """Rules relating two options of a section report the option at fault."""
    assert problems_of({"secret": "s", "redis": redis}) == (problem,)


def test_exact_message_for_a_bad_port() -> None:
    """The message has the contract's form, word for word."""
    with pytest.raises(ConfigError) as info:
        load(with_option("redis.port", 70000))
    assert info.value.problems == (
        ConfigProblem("session.redis.port", "must be between 1 and 65535, got 70000"),
    )
    assert str(info.value) == (
        "invalid session configuration: session.redis.port: must be between 1 and 65535, got 70000"
    )


def test_every_problem_is_reported_at_once() -> None:
    """Independent problems in several sections come in one ConfigError."""
    doc = {
        "name": "bad name",
        "expiration": "1 fortnight",
        "colour": "blue",
        "redis": {
            "host": "fd00::1",
            "prot": 6379,
            "database_index": -1,
            "minimum_idle_connections": 3,
            "maximum_active_connections": 2,
            "tls": {"minimum_version": "SSL3.0"},
            "high_availability": {
                "sentinel_name": "m",
                "nodes": [{"host": "s1", "port": 70000}, {"port": 1}],
            },
        },
    }
    paths = [problem.path for problem in structured_problems_of(doc)]
    assert paths == [
        "session.name",
        "session.expiration",
        "session.redis.host",
        "session.redis.database_index",
        "session.redis.tls.minimum_version",
        "session.redis.high_availability.nodes[0].port",
        "session.redis.high_availability.nodes[1].host",
        "session.redis.prot",
        "session.colour",
        "session.secret",
    ]


NODES = "session.redis.high_availability.nodes"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"secret": "s", "redis": {"host": "h", "port": "6379"}},
            [
                (
                    "session.redis.port",
                    "expected an integer, got the string '6379'; remove the quotes",
                )
            ],
        ),
        (
            {
                "secret": "s",
                "redis": {
                    "high_availability": {
                        "sentinel_name": "m",
                        "nodes": [{"host": "s1"}, {"host": "s2", "port": 0}],
                    }
                },
            },
            [(f"{NODES}[1].port", "must be between 1 and 65535, got 0")],
        ),
        (
            {
                "redis": {
                    "host": "h",
                    "tls": {"minimum_version": "TLS1.3", "maximum_version": "TLS1.2"},
                }
            },
            [
                (
                    "session.redis.tls.maximum_version",
                    "must not be below minimum_version (TLS1.3), got TLS1.2",
                ),
                ("session.secret", "is required when redis is configured"),
            ],
        ),
        (
            {"secret": "s", "redis": {"high_availability": {"nodes": [{"port": 1}, "s2"]}}},
            [
                ("session.redis.high_availability.sentinel_name", "is required"),
                (f"{NODES}[0].host", "is required"),
                (f"{NODES}[1]", "expected a mapping of options, got a string"),
            ],
        ),
        (
            # Text that looks like a path or a separator inside a value stays in the message.
            {"secret": "s", "redis": {"host": "h: x @ session.redis.port"}},
            [
                (
                    "session.redis.host",
                    "'h: x @ session.redis.port' is not a host name, an IPv4 address or a"
                    " bracketed IPv6 address or an absolute unix socket path",
                )
            ],
        ),
    ],
)
def test_problems_are_structured(doc: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    """Each problem holds the option path and the message apart; str() joins them."""
    problems = structured_problems_of(doc)
    assert [(p.path, p.message) for p in problems] == expected
    assert [str(p) for p in problems] == [f"{path}: {message}" for path, message in expected]


def test_config_error_accepts_problems_and_lines() -> None:
    """ConfigError takes ConfigProblem objects or path: message lines, and renders both alike."""
    error = ConfigError(
        [
            ConfigProblem("session.redis.port", "must be between 1 and 65535, got 0"),
            "session.redis.tls.ca_file: cannot load /x.pem: No such file or directory",
            "no path here",
        ]
    )
    assert error.problems == (
        ConfigProblem("session.redis.port", "must be between 1 and 65535, got 0"),
        ConfigProblem("session.redis.tls.ca_file", "cannot load /x.pem: No such file or directory"),
        ConfigProblem("", "no path here"),
    )
    assert str(error) == (
        "invalid session configuration (3 problems):\n"
        "  - session.redis.port: must be between 1 and 65535, got 0\n"
        "  - session.redis.tls.ca_file: cannot load /x.pem: No such file or directory\n"
        "  - no path here"
    )


def test_config_problem_is_public_and_frozen() -> None:
    """ConfigProblem is exported beside ConfigError and cannot be changed after the fact."""
    assert redis_session.ConfigProblem is ConfigProblem
    assert "ConfigProblem" in redis_session.__all__
    problem = ConfigProblem("session.name", "must not be empty")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        problem.path = "session.domain"  # type: ignore[misc]


def test_cross_checks_of_a_sound_section_run_beside_broken_ones() -> None:
    """A valid tls section's combination rule is reported next to a broken sibling option."""
    doc = {"secret": "s", "redis": {"host": "h", "port": 0, "tls": {"key_file": "k"}}}
    assert problems_of(doc) == (
        "session.redis.port: must be between 1 and 65535, got 0",
        "session.redis.tls.certificate_file: is required with key_file",
    )


def test_non_string_keys_are_unknown_options() -> None:
    """Keys YAML reads as numbers, booleans or null are reported, not crashed on."""
    problems = problems_of({1: "a", False: "b", None: "c", 2.5: "d", "name": "ok"})
    assert sorted(problems) == [
        "session.1: unknown option",
        "session.2.5: unknown option",
        "session.False: unknown option",
        "session.None: unknown option",
    ]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([1, 2], "session: expected a mapping of options, got a list"),
        (42, "session: expected a mapping of options, got an integer"),
        ({"session": "yes"}, "session: expected a mapping of options, got a string"),
        ({"session": [1]}, "session: expected a mapping of options, got a list"),
        (3.5, "session: expected a mapping of options, got a number"),
        (b"session:", "session: expected a mapping of options, got a bytes"),
    ],
)
def test_documents_that_are_not_mappings(document: Any, problem: str) -> None:
    """A document of the wrong shape is one problem on session."""
    assert problems_of(document) == (problem,)


def test_yaml_dates_are_named_in_messages(tmp_path: Path) -> None:
    """A value of a type only YAML produces (a date) is named by its type."""
    path = tmp_path / "date.yml"
    path.write_text("secret: s\nredis: {host: h, port: 2024-01-01}\n")
    assert problems_of(path) == ("session.redis.port: expected an integer, got a date",)


# -- YAML files ----------------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    """An unreadable file is a ConfigError naming it."""
    path = tmp_path / "nope.yml"
    problems = problems_of(path)
    assert problems == (f"{path}: cannot read the configuration file: No such file or directory",)


def test_yaml_syntax_error_names_file_and_line_without_the_text(tmp_path: Path) -> None:
    """A YAML syntax error gives the file and position but never the offending line."""
    path = tmp_path / "broken.yml"
    path.write_text(f'session:\n  secret: "{SECRET}\n  name: x\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    (problem,) = info.value.problems
    assert problem.path == str(path)
    assert problem.message.startswith("invalid YAML at line ")
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    """A key given twice is an error (PyYAML would silently keep the last one)."""
    path = tmp_path / "dup.yml"
    path.write_text("session:\n  redis:\n    port: 1\n    port: 2\n")
    (problem,) = problems_of(path)
    assert problem == f"{path}: invalid YAML at line 4, column 5: found duplicate key 'port'"


def test_undecodable_file(tmp_path: Path) -> None:
    """Bytes that are not text give a ConfigError naming the file."""
    path = tmp_path / "binary.yml"
    path.write_bytes(b"session:\n  name: \xff\xfe\xfa\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: invalid YAML: ")


def test_several_documents_in_one_file(tmp_path: Path) -> None:
    """A YAML stream with two documents is rejected."""
    path = tmp_path / "two.yml"
    path.write_text("session: {}\n---\nsession: {}\n")
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}: invalid YAML at line 2, column 1: "
        "expected a single document in the stream; but found another document"
    )


def test_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PyYAML a path gives a ConfigError saying what to install; mappings still work."""
    path = tmp_path / "c.yml"
    path.write_text("session: {}\n")
    _yaml_loader.cache_clear()
    monkeypatch.setitem(sys.modules, "yaml", None)
    try:
        assert problems_of(path) == (
            f"{path}: reading a YAML file needs PyYAML: pip install 'redis-session-store[yaml]'",
        )
        assert load({"name": "x"}).name == "x"
    finally:
        _yaml_loader.cache_clear()


# -- secrets from files --------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_bytes(content.encode())
    return str(path)


def test_secret_files_fill_all_three_secrets(tmp_path: Path) -> None:
    """Each *_FILE variable fills its secret; one trailing newline is removed."""
    environ = {
        "REDIS_SESSION_SECRET_FILE": write(tmp_path, "s", "session-secret\n"),
        "REDIS_SESSION_REDIS_PASSWORD_FILE": write(tmp_path, "p", "redis-password\r\n"),
        "REDIS_SESSION_REDIS_HIGH_AVAILABILITY_SENTINEL_PASSWORD_FILE": write(
            tmp_path, "sp", "sentinel\n\n"
        ),
    }
    doc = {"redis": {"host": "h", "high_availability": {"sentinel_name": "m"}}}
    cfg = load(doc, environ)
    assert cfg.secret == Secret("session-secret")
    assert cfg.redis is not None
    assert cfg.redis.password == Secret("redis-password")
    assert cfg.redis.high_availability is not None
    assert cfg.redis.high_availability.sentinel_password == Secret("sentinel\n")
    assert doc == {"redis": {"host": "h", "high_availability": {"sentinel_name": "m"}}}


def test_secret_file_list_is_documented_scheme() -> None:
    """The variables follow REDIS_SESSION_ + option path + _FILE."""
    for variable, path in SECRET_FILE_VARIABLES.items():
        assert variable == "REDIS_SESSION_" + "_".join(path).upper() + "_FILE"


def test_secret_file_without_trailing_newline(tmp_path: Path) -> None:
    """A file without a final newline is used as is."""
    environ = {"REDIS_SESSION_SECRET_FILE": write(tmp_path, "s", "exact")}
    assert load({}, environ).secret == Secret("exact")


def test_redis_secret_files_need_their_section(tmp_path: Path) -> None:
    """Redis password variables do nothing without a redis (or sentinel) section."""
    environ = {
        "REDIS_SESSION_REDIS_PASSWORD_FILE": write(tmp_path, "p", "pw"),
        "REDIS_SESSION_REDIS_HIGH_AVAILABILITY_SENTINEL_PASSWORD_FILE": write(tmp_path, "x", "y"),
    }
    assert load({}, environ) == SessionConfig()
    redis = load({"secret": "s", "redis": {"host": "h"}}, environ).redis
    assert redis == RedisConfig(host="h", password=Secret("pw"))


def test_empty_variable_is_unset() -> None:
    """An empty *_FILE variable counts as unset."""
    assert load({"secret": "inline"}, {"REDIS_SESSION_SECRET_FILE": ""}).secret == Secret("inline")


def test_secret_file_and_inline_value_conflict(tmp_path: Path) -> None:
    """Giving a secret both inline and by file is an error."""
    environ = {"REDIS_SESSION_SECRET_FILE": write(tmp_path, "s", SECRET)}
    with pytest.raises(ConfigError) as info:
        load({"secret": SECRET}, environ)
    assert info.value.problems == (
        ConfigProblem(
            "session.secret", "is set both here and by REDIS_SESSION_SECRET_FILE; use one"
        ),
    )
    assert SECRET not in str(info.value)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    """A missing file is named with its variable, and not reported again as missing secret."""
    missing = str(tmp_path / "missing")
    problems = problems_of({"redis": {"host": "h"}}, {"REDIS_SESSION_SECRET_FILE": missing})
    assert problems == (
        f"session.secret: cannot read the file named by REDIS_SESSION_SECRET_FILE "
        f"({missing!r}): No such file or directory",
    )


def test_secret_file_that_is_a_directory(tmp_path: Path) -> None:
    """A directory is not a secret file."""
    problems = problems_of({}, {"REDIS_SESSION_SECRET_FILE": str(tmp_path)})
    assert problems[0].startswith("session.secret: cannot read the file named by")


def test_empty_or_binary_secret_file(tmp_path: Path) -> None:
    """An empty file or one that is not UTF-8 is an error, without its content."""
    empty = write(tmp_path, "empty", "\n")
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff" + SECRET.encode())
    problems = problems_of(
        {"redis": {"host": "h", "password": None}},
        {"REDIS_SESSION_SECRET_FILE": empty, "REDIS_SESSION_REDIS_PASSWORD_FILE": str(binary)},
    )
    assert problems == (
        f"session.secret: the file named by REDIS_SESSION_SECRET_FILE ({empty!r}) is empty",
        f"session.redis.password: the file named by REDIS_SESSION_REDIS_PASSWORD_FILE "
        f"({str(binary)!r}) is not UTF-8 text",
    )


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without environ, the process environment is read."""
    monkeypatch.setenv("REDIS_SESSION_SECRET_FILE", write(tmp_path, "s", "from-env\n"))
    assert load_config({}).secret == Secret("from-env")


# -- secrets never shown -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"secret": SECRET, "redis": {"host": "h", "port": 0, "password": SECRET}},
        {"secret": SECRET, "name": "", "redis": {"password": SECRET}},
        {"secret": SECRET, "secrt": SECRET, "redis": {"host": "h", "passwrd": SECRET}},
        {"secret": [SECRET], "redis": {"host": "h", "password": {"value": SECRET}}},
        {"previous_secrets": [SECRET, 1, ""], "redis": {"password": [SECRET]}},
        {
            "secret": SECRET,
            "redis": {
                "host": "h",
                "high_availability": {"sentinel_password": SECRET, "nodes": [SECRET]},
            },
        },
    ],
)
def test_secrets_never_appear_in_errors(doc: dict[str, Any]) -> None:
    """Invalid configs holding a secret never show it in the error's str or repr."""
    with pytest.raises(ConfigError) as info:
        load(doc)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)
    assert all(SECRET not in str(problem) for problem in info.value.problems)
    assert all(SECRET not in repr(problem) for problem in info.value.problems)


def test_secrets_never_appear_in_reprs() -> None:
    """A loaded config's repr and str mask every secret."""
    doc = {
        "secret": SECRET,
        "previous_secrets": [SECRET],
        "redis": {
            "host": "h",
            "password": SECRET,
            "high_availability": {"sentinel_name": "m", "sentinel_password": SECRET},
        },
    }
    cfg = load(doc)
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert cfg.secret is not None
    assert str(cfg.secret) == "**********"


# -- configs built in Python ---------------------------------------------------------------------


def test_validate_accepts_python_built_configs() -> None:
    """validate_config passes a sound SessionConfig built in Python."""
    cfg = SessionConfig(
        secret=Secret("s"),
        previous_secrets=(Secret("old"),),
        redis=RedisConfig(
            host="h",
            tls=TLSConfig(maximum_version=ssl.TLSVersion.TLSv1_3),
            high_availability=HighAvailabilityConfig("m", nodes=(NodeConfig("s1"),)),
        ),
    )
    validate_config(cfg)
    validate_config(SessionConfig())


@pytest.mark.parametrize(
    ("cfg", "problem"),
    [
        (
            SessionConfig(secret=Secret("s"), redis=RedisConfig(host="h", port=70000)),
            "session.redis.port: must be between 1 and 65535, got 70000",
        ),
        (
            SessionConfig(secret=Secret("s"), redis=RedisConfig(host="h", port="6379")),  # type: ignore[arg-type]
            "session.redis.port: expected an integer, got the string '6379'; remove the quotes",
        ),
        (
            SessionConfig(redis=RedisConfig(host="h")),
            "session.secret: is required when redis is configured",
        ),
        (
            SessionConfig(secret=Secret(123)),  # type: ignore[arg-type]
            "session.secret: expected a string inside Secret()",
        ),
        (
            SessionConfig(secret="plain"),  # type: ignore[arg-type]
            "session.secret: expected a Secret, got a string",
        ),
        (
            SessionConfig(previous_secrets=[Secret("a")]),  # type: ignore[arg-type]
            "session.previous_secrets: expected a tuple, got a list",
        ),
        (
            SessionConfig(inactivity="5m"),  # type: ignore[arg-type]
            "session.inactivity: expected a timedelta, got a string",
        ),
        (
            SessionConfig(
                secret=Secret("s"),
                redis=RedisConfig(
                    host="h",
                    high_availability=HighAvailabilityConfig(
                        "m",
                        nodes=(NodeConfig("a"), {"host": "b"}),  # type: ignore[arg-type]
                    ),
                ),
            ),
            "session.redis.high_availability.nodes[1]: expected a NodeConfig, got a mapping",
        ),
        ({"name": "x"}, "session: expected a SessionConfig, got a mapping"),
        (
            SessionConfig(name=None),  # type: ignore[arg-type]
            "session.name: expected a string, got nothing (null)",
        ),
        (
            SessionConfig(secret=Secret("s"), redis=42),  # type: ignore[arg-type]
            "session.redis: expected a mapping of options, got an integer",
        ),
        (
            SessionConfig(
                secret=Secret("s"),
                redis=RedisConfig(host="h", tls=TLSConfig(minimum_version=ssl.TLSVersion.SSLv3)),
            ),
            "session.redis.tls.minimum_version: must not be below TLS1.0, got SSLv3",
        ),
        (
            SessionConfig(
                secret=Secret("s"),
                redis=RedisConfig(
                    host="h", tls=TLSConfig(maximum_version=ssl.TLSVersion.MAXIMUM_SUPPORTED)
                ),
            ),
            "session.redis.tls.maximum_version: expected one of TLS1.0, TLS1.1, TLS1.2, TLS1.3, "
            "got MAXIMUM_SUPPORTED",
        ),
        (
            SessionConfig(expiration=timedelta(seconds=-1)),
            "session.expiration: must not be negative",
        ),
        ("not a config", "session: expected a mapping of options, got a string"),
    ],
)
def test_validate_rejects_python_built_configs(cfg: Any, problem: str) -> None:
    """validate_config applies the same rules and messages as load_config."""
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert tuple(map(str, info.value.problems)) == (problem,)


def test_resolve_fills_server_name() -> None:
    """resolve_config checks, then fills tls.server_name from the host."""
    cfg = SessionConfig(secret=Secret("s"), redis=RedisConfig(host="[::1]", tls=TLSConfig()))
    resolved = resolve_config(cfg)
    assert resolved.redis is not None
    assert resolved.redis.tls == TLSConfig(server_name="::1")
    assert resolve_config(resolved) == resolved
    assert attrs.evolve(resolved, redis=cfg.redis) == cfg
    with pytest.raises(ConfigError):
        resolve_config(SessionConfig(redis=RedisConfig(host="h")))


def test_resolve_converts_like_yaml() -> None:
    """resolve_config turns loosely typed values into the declared types."""
    loose = SessionConfig(
        secret="s",  # type: ignore[arg-type]
        inactivity="10m",  # type: ignore[arg-type]
        previous_secrets=["old"],  # type: ignore[arg-type]
    )
    assert resolve_config(loose) == SessionConfig(
        secret=Secret("s"), inactivity=timedelta(minutes=10), previous_secrets=(Secret("old"),)
    )


# -- junk never escapes as another exception -----------------------------------------------------

OPTION_NAMES = sorted(
    {
        f.name
        for cls in (SessionConfig, RedisConfig, TLSConfig, HighAvailabilityConfig)
        for f in attrs.fields(cls)
    }
    | {"host", "port", "session"}
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["1h", "TLS1.2", "SSL3.0", "[::1]", "/tmp/s", "localhost", "fd00::1", ""])
)
keys = (
    st.sampled_from(OPTION_NAMES) | st.text(max_size=8) | st.integers() | st.booleans() | st.none()
)
junk = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=25,
)
JUNK_SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_loads_or_config_error(document: Any) -> None:
    try:
        with warnings.catch_warnings():
            # The seed's deprecated options warn each time; junk is about errors, not warnings.
            warnings.simplefilter("ignore", FutureWarning)
            cfg = load(document)
    except ConfigError as exc:
        problems = exc.problems
    else:
        assert isinstance(cfg, SessionConfig)
        return
    assert problems
    assert all(isinstance(p, ConfigProblem) and p.path and p.message for p in problems)


@JUNK_SETTINGS
@given(
    st.dictionaries(keys, junk, max_size=6)
    | st.lists(junk, max_size=3)
    | scalars.filter(lambda v: not isinstance(v, str))
)
def test_junk_documents_raise_config_error(document: Any) -> None:
    """Any junk document either loads or raises ConfigError, never another exception."""
    assert_loads_or_config_error(document)
    assert_loads_or_config_error({"session": document})


@JUNK_SETTINGS
@given(junk)
def test_junk_redis_sections_raise_config_error(section: Any) -> None:
    """Junk under session.redis either loads or raises ConfigError."""
    assert_loads_or_config_error({"secret": "s", "redis": section})


def leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [prefix] + [p for k, v in node.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(node, list):
        return [prefix] + [p for i, v in enumerate(node) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


SEED_DOCUMENT = yaml.safe_load(SEED_SESSION_YAML)
SEED_PATHS = leaf_paths(SEED_DOCUMENT)[1:]


@JUNK_SETTINGS
@given(st.sampled_from(SEED_PATHS), junk)
def test_junk_anywhere_in_the_seed_raises_config_error(path: tuple[Any, ...], value: Any) -> None:
    """Replacing any option of the seed example with junk either loads or raises ConfigError."""
    doc = copy.deepcopy(SEED_DOCUMENT)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert_loads_or_config_error(doc)


@pytest.mark.parametrize("option", ["expiration", "inactivity", "remember_me"])
def test_session_clocks_are_capped_at_a_century(option: str) -> None:
    """A session clock over 100 years is refused: the Redis provider could not honour it."""
    assert load_config({option: "100y"}) is not None
    with pytest.raises(ConfigError) as info:
        load_config({option: "40000y"})
    assert info.value.problems == (
        ConfigProblem(f"session.{option}", "must be at most 100y, got 40000y"),
    )
