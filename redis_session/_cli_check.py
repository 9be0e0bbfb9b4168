"""``check CONFIG``: validate a config, then reach every node as the app would; write nothing.

In order:

1. The configuration: every ``ConfigError`` problem with its option path, deprecation warnings,
   and what is risky without being wrong (``tls.skip_verify``, a short ``secret``, no Redis).
2. The store opens exactly as the app's does (``ConnectionManager.open``: TLS, Sentinel or
   Cluster discovery, the first connection), then is closed again.
3. Every node, found as the store finds them (``_cli_nodes``): reachable, PING latency, server
   version and role, and the ACL permission for every command the store sends there, on the
   key pattern ``<session.name>:*``. Permissions are asked of the server without running the
   commands: ``redis.acl_check_cmd`` (Redis 7) inside one ``EVAL`` of a script declared
   ``no-writes``, so the server itself refuses the probe any write. Sentinels are asked the
   questions the store asks them (all read-only) and whether they let it subscribe.
4. Cluster settings that docs/cluster.md (section 8) recommends, where ``CONFIG GET`` is allowed.

Nothing is written: the only commands sent are PING, HELLO (or INFO), CONFIG GET, the discovery
questions (CLUSTER SHARDS, SENTINEL ...), SUBSCRIBE on a connection dropped at once, and the
read-only probe script (which the server caches, as it caches the store's own scripts).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import warnings
from collections.abc import Sequence
from os import PathLike
from typing import Any

import attrs

from . import _redis_provider
from ._cli_nodes import DataMember, Deployment, SentinelMember, discover
from ._cli_report import ERROR, OK, WARNING, Finding, Status
from ._cluster import OPTION as CLUSTER_OPTION
from ._config import RedisConfig, SessionConfig
from ._config_loading import load_config
from ._connections import ConnectionManager
from ._errors import CommandError, ConfigError, RedisSessionError, StoreUnavailable
from ._ids import IdLayout
from ._probe import DataNode
from ._scripts import Script
from ._sentinel import CHANNELS
from ._sentinel import OPTION as SENTINEL_OPTION
from ._spec import connection_spec
from ._tasks import gather_all
from ._wire import node_label

__all__ = ["PROBE", "Need", "data_needs", "run_check", "script_commands"]

#: PINGs per node for the latency figures.
PINGS = 5
#: A node whose slowest PING takes more than this share of ``redis.timeout`` is worth a warning.
_SLOW_SHARE = 0.1
#: The oldest server the store supports: its read-only replica script declares
#: ``#!lua flags=no-writes`` and the cluster map comes from ``CLUSTER SHARDS`` (Redis 7.0).
MINIMUM_VERSION = (7, 0)
#: A secret shorter than this is worth a warning (the key material is derived from it).
_SHORT_SECRET = 32
#: Where ``session.redis`` options live.
_REDIS = "session.redis"

#: The permission probe. ARGV[1] is a JSON list of ``[args, bare]``: ``args`` the command as the
#: store sends it (with a key of the store's pattern), ``bare`` how many leading words name the
#: command. Per check: 1 allowed; 0 the command itself is not; 2 the command is, but not with
#: these arguments (the key); or the error text (a command this server does not know).
#: ``redis.acl_check_cmd`` asks the ACL of the connection's user and runs nothing; the flag
#: makes the server refuse any write the script might attempt.
PROBE = Script(
    """#!lua flags=no-writes
local function check(args)
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(args))
  if not ok then
    if type(allowed) == 'table' then allowed = allowed.err end
    return tostring(allowed)
  end
  return allowed
end
local out = {}
for i, spec in ipairs(cjson.decode(ARGV[1])) do
  local args, bare = spec[1], spec[2]
  local allowed = check(args)
  if type(allowed) == 'string' then
    out[i] = allowed
  elseif allowed then
    out[i] = 1
  else
    local name = {}
    for n = 1, bare do name[n] = args[n] end
    if check(name) == true then out[i] = 2 else out[i] = 0 end
  end
end
return out
"""
)

_DENIED = re.compile(r"no permissions to run the '([^']+)' command")


@attrs.frozen
class Need:
    """A command the store sends to a data node, and why."""

    #: The command as checked; the word ``KEY`` stands for a key of the store's pattern.
    args: tuple[str, ...]
    #: How many leading words name it (2 for ``CLUSTER SHARDS``).
    bare: int
    why: str

    @property
    def name(self) -> str:
        """How a person writes it: ``EVALSHA``, ``CLUSTER SHARDS``."""
        return " ".join(self.args[: self.bare])

    @property
    def rule(self) -> str:
        """The ACL rule that allows it: ``+evalsha``, ``+cluster|shards``."""
        return "+" + "|".join(self.args[: self.bare]).lower()

    def concrete(self, key: str) -> list[str]:
        """Return the arguments with ``KEY`` replaced by ``key``."""
        return [key if a == "KEY" else a for a in self.args]


def script_commands() -> list[str]:
    """Every Redis command the store's Lua scripts call, from their source, sorted."""
    found: set[str] = set()
    for value in vars(_redis_provider).values():
        if isinstance(value, Script):
            found.update(re.findall(r"redis\.p?call\('([A-Za-z]+)'", value.source))
    return sorted(name.upper() for name in found)


def data_needs(cfg: RedisConfig) -> list[Need]:
    """Every command the store sends to a data node of ``cfg``, outside and inside its scripts.

    Every data node gets the whole list: a replica may be promoted, and then serves writes.
    """
    sha = _redis_provider.LOAD.sha
    needs = [
        Need(("EVALSHA", sha, "1", "KEY"), 1, "every store operation runs its script by SHA"),
        Need(("EVAL", "return 1", "1", "KEY"), 1, "a script a node has not cached is sent whole"),
        Need(("DEL", "KEY"), 1, "delete removes a session's keys"),
        Need(("PING",), 1, "idle connections are health-checked"),
        Need(("CLIENT", "SETNAME", "redis_session"), 2, "each connection is named"),
    ]
    if cfg.database_index:
        needs.append(Need(("SELECT", str(cfg.database_index)), 1, "session.redis.database_index"))
    needs += [
        Need((name, "KEY"), 1, "called inside the store's Lua scripts")
        for name in script_commands()
    ]
    ha, cluster = cfg.high_availability, cfg.cluster
    if ha is not None:
        needs += [
            Need(("ROLE",), 1, "a master named by the sentinels is verified"),
            Need(("INFO", "replication"), 1, "a replica chosen in a failover is watched"),
        ]
        if ha.route_by_latency or ha.route_randomly:
            needs.append(Need(("HMGET", "KEY", "v"), 1, "loads read replicas (route_*)"))
    if cluster is not None:
        needs += [
            Need(("CLUSTER", "SHARDS"), 2, "the slot map is read from the nodes"),
            Need(("ASKING",), 1, "a command follows an ASK redirect during a migration"),
        ]
        if cluster.route_by_latency or cluster.route_randomly:
            needs += [
                Need(("READONLY",), 1, "connections to replicas serve reads (route_*)"),
                Need(("HMGET", "KEY", "v"), 1, "loads read replicas (route_*)"),
            ]
    return needs


@attrs.define
class CheckReport:
    """What ``check`` found, in order."""

    findings: list[Finding] = attrs.field(factory=list)
    #: ``memory``, ``server``, ``sentinel`` or ``cluster`` (``None`` when the config is invalid).
    provider: str | None = None

    def add(
        self,
        status: Status,
        check: str,
        message: str,
        *,
        node: str | None = None,
        option: str | None = None,
        fix: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one finding."""
        self.findings.append(Finding(status, check, message, node, option, fix, details or {}))


async def run_check(source: str | PathLike[str]) -> CheckReport:
    """Check the configuration at ``source`` and every node it reaches; write nothing."""
    report = CheckReport()
    cfg = _load(source, report)
    if cfg is None:
        return report
    _check_config(cfg, report)
    if cfg.redis is None:
        report.provider = "memory"
        return report
    redis = cfg.redis
    try:
        spec = connection_spec(redis)
    except ConfigError as exc:
        for problem in exc.problems:
            report.add(ERROR, "config", problem.message, option=problem.path or None)
        return report
    await _check_open(redis, report)
    deployment = await discover(redis, spec)
    report.provider = deployment.kind
    try:
        report.findings += deployment.findings
        _check_topology(cfg, deployment, report)
        key = _sample_key(cfg, deployment)
        found = await gather_all(
            [_check_data_node(cfg, redis, m, key) for m in deployment.data]
            + [_check_sentinel(redis, s) for s in deployment.sentinels]
        )
        for findings in found:
            report.findings += findings
    finally:
        await deployment.aclose()
    return report


# -- the configuration ----------------------------------------------------------------------------


def _load(source: str | PathLike[str], report: CheckReport) -> SessionConfig | None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cfg = load_config(source)
        except ConfigError as exc:
            for problem in exc.problems:
                report.add(ERROR, "config", problem.message, option=problem.path or None)
            return None
    for warning in caught:
        if issubclass(warning.category, FutureWarning):
            # The config's own deprecation warnings (Authelia's old option names).
            report.add(WARNING, "config", str(warning.message))
        else:
            # Not about the configuration (a ResourceWarning of the garbage collector running
            # meanwhile, a library's DeprecationWarning): passed on, not reported as a finding.
            warnings.warn_explicit(
                warning.message,
                warning.category,
                warning.filename,
                warning.lineno,
                source=warning.source,
            )
    return cfg


def _check_config(cfg: SessionConfig, report: CheckReport) -> None:
    if cfg.redis is None:
        report.add(
            WARNING,
            "provider",
            "session.redis is not configured: sessions live in each process's memory, die with "
            "it and are not shared between processes",
            option=_REDIS,
        )
        return
    report.add(OK, "config", "the configuration is valid")
    secret = cfg.secret.get_secret_value() if cfg.secret is not None else ""
    if len(secret) < _SHORT_SECRET:
        report.add(
            WARNING,
            "config",
            f"session.secret is shorter than {_SHORT_SECRET} characters: every key is derived "
            "from it; use a long random value",
            option="session.secret",
        )
    previous = [s.get_secret_value() for s in cfg.previous_secrets]
    if secret in previous:
        report.add(
            WARNING,
            "config",
            "session.previous_secrets repeats the current secret (ignored): a rotation puts "
            "the old secret there and a new one in session.secret",
            option="session.previous_secrets",
        )
    if previous and cfg.index_secret is None:
        # docs/users.md section 4: the users' index keys are derived from index_secret, which
        # defaults to secret; once secret has rotated, every user's list and revocation mark
        # is under keys the app no longer computes.
        report.add(
            WARNING,
            "config",
            "session.previous_secrets is set but session.index_secret is not: the session "
            "lists and revocation marks of users (login with user=...) are keyed by "
            "session.secret, so this rotation loses them; "
            "set session.index_secret to the previous secret's value",
            option="session.index_secret",
        )
    tls = cfg.redis.tls
    if tls is not None and tls.skip_verify:
        report.add(
            WARNING,
            "tls",
            "certificate and host name verification is off: the connection is encrypted but "
            "the server is not authenticated (testing only)",
            option=f"{_REDIS}.tls.skip_verify",
        )


async def _check_open(redis: RedisConfig, report: CheckReport) -> None:
    """Open the store's connections exactly as the app does, then close them."""
    try:
        manager = await ConnectionManager.open(redis)
    except ConfigError as exc:
        for problem in exc.problems:
            report.add(ERROR, "open", problem.message, option=problem.path or None)
        return
    except RedisSessionError as exc:
        report.add(ERROR, "open", f"the store does not open: {exc}", option=_REDIS)
        return
    try:
        nodes = [n.node for n in manager.statistics().nodes]
    finally:
        await manager.aclose()
    report.add(
        OK,
        "open",
        f"the store opens as the app would (connected to {', '.join(nodes)})",
        details={"nodes": nodes},
    )


# -- the topology ---------------------------------------------------------------------------------


def _check_topology(cfg: SessionConfig, deployment: Deployment, report: CheckReport) -> None:
    redis = cfg.redis
    assert redis is not None
    if deployment.kind == "cluster" and deployment.slot_map is not None:
        found = deployment.slot_map
        masters = len(deployment.masters())
        replicas = len(deployment.data) - masters
        uncovered = found.uncovered_slots()
        if uncovered:
            report.add(
                ERROR,
                "cluster",
                f"{uncovered} of 16384 hash slots have no master: sessions in them cannot be "
                "read or written (CLUSTER ADDSLOTS, or wait for a failover to finish)",
                option=CLUSTER_OPTION,
                details={"uncovered_slots": uncovered},
            )
        else:
            report.add(
                OK,
                "cluster",
                f"{masters} masters and {replicas} replicas serve all 16384 hash slots",
                details={"masters": masters, "replicas": replicas},
            )
        for shard in found.shards:
            master = shard.master
            if not shard.replicas and master is not None and master.address is not None:
                report.add(
                    WARNING,
                    "cluster",
                    "this master has no replica: losing it loses its slots' sessions",
                    node=node_label(*master.address),
                )
    if deployment.kind == "sentinel" and deployment.masters():
        writer = deployment.masters()[0].node.label
        agreeing = [s for s in deployment.sentinels if s.master is not None]
        count = len(deployment.data) - 1
        ha = redis.high_availability
        assert ha is not None
        report.add(
            OK,
            "sentinel",
            f"{len(agreeing)} sentinels name {writer} master of {ha.sentinel_name!r}, "
            f"with {count} replica{'' if count == 1 else 's'}",
            details={"master": writer, "replicas": count, "sentinels": len(agreeing)},
        )
        if count == 0:
            report.add(
                WARNING,
                "sentinel",
                "the master has no replica: a failover has nowhere to go",
                node=writer,
            )


def _sample_key(cfg: SessionConfig, deployment: Deployment) -> str:
    """Return a key name of the store's shape (never written); slot-tagged on a cluster."""
    layout = IdLayout(f"{cfg.name}:".encode(), tagged=deployment.kind == "cluster")
    return (layout.prefix(layout.new()) + b"redis-session-check").decode()


# -- data nodes -----------------------------------------------------------------------------------


async def _check_data_node(
    cfg: SessionConfig, redis: RedisConfig, member: DataMember, key: str
) -> list[Finding]:
    report = CheckReport()
    node = member.node
    label = node.label
    down = ERROR if member.role == "master" else WARNING
    if member.health is not None and member.health not in ("online", "ok", "unknown"):
        report.add(
            down,
            "role",
            f"the {member.reported_by} report this {member.role} as {member.health}",
            node=label,
        )
    rtts = await _latency(node, report, down, redis)
    if rtts is None:
        return report.findings
    hello = await _hello(node)
    _check_version(hello, label, report)
    _check_role(hello, member, label, report)
    await _check_acl(redis, node, key, cfg.name, report)
    if redis.cluster is not None:
        await _check_cluster_settings(node, report)
    return report.findings


async def _latency(
    node: DataNode, report: CheckReport, down: Status, redis: RedisConfig
) -> list[float] | None:
    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    try:
        for _ in range(PINGS):
            began = loop.time()
            await node.execute("PING")
            rtts.append((loop.time() - began) * 1000)
    except StoreUnavailable as exc:
        text = str(exc)
        denied = _DENIED.search(text)
        if denied is not None:
            rule = "+" + denied.group(1)
            user = redis.username or "default"
            report.add(
                ERROR,
                "acl",
                f"the ACL user {user!r} may not run {denied.group(1).upper()} when connecting: "
                f"add {rule}",
                node=node.label,
                option=f"{_REDIS}.username",
                fix=f"ACL SETUSER {user} {rule}",
            )
        else:
            report.add(down, "reachable", text, node=node.label, option=_connection_option(redis))
        return None
    except CommandError as exc:
        report.add(ERROR, "reachable", f"PING was refused: {exc}", node=node.label)
        return None
    tls = redis.tls is not None and not node.host.startswith("/")
    report.add(
        OK,
        "reachable",
        f"connected{' over TLS' if tls else ''} as {redis.username or 'default'!r}",
        node=node.label,
        details={"tls": tls},
    )
    _report_latency(rtts, node.label, redis, report)
    return rtts


def _report_latency(
    rtts: Sequence[float], label: str, redis: RedisConfig, report: CheckReport
) -> None:
    slowest = max(rtts)
    figures = {
        "min_ms": round(min(rtts), 3),
        "median_ms": round(statistics.median(rtts), 3),
        "max_ms": round(slowest, 3),
        "pings": len(rtts),
    }
    text = (
        f"PING round trip {figures['min_ms']:.2f} / {figures['median_ms']:.2f} / "
        f"{figures['max_ms']:.2f} ms (min / median / max of {len(rtts)})"
    )
    limit = redis.timeout.total_seconds() * 1000
    if slowest > limit * _SLOW_SHARE:
        report.add(
            WARNING,
            "latency",
            f"{text}: over a tenth of session.redis.timeout ({limit:.0f} ms)",
            node=label,
            option=f"{_REDIS}.timeout",
            details=figures,
        )
    else:
        report.add(OK, "latency", text, node=label, details=figures)


def _connection_option(redis: RedisConfig) -> str:
    if redis.high_availability is not None:
        return f"{SENTINEL_OPTION}.nodes"
    if redis.cluster is not None:
        return f"{CLUSTER_OPTION}.nodes"
    return f"{_REDIS}.host"


async def _hello(node: DataNode) -> dict[str, str]:
    """``HELLO`` (no protocol switch) as text fields; ``INFO server`` where HELLO is refused."""
    try:
        reply = await node.execute("HELLO")
        return {
            _text(k): _text(v)
            for k, v in zip(reply[::2], reply[1::2], strict=False)
            if not isinstance(v, list)
        }
    except CommandError:
        pass
    try:
        info = _text(await node.execute("INFO", "server"))
    except CommandError:
        return {}
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return {
        "server": "redis",
        "version": fields.get("redis_version", ""),
        "mode": fields.get("redis_mode", ""),
    }


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _check_version(hello: dict[str, str], label: str, report: CheckReport) -> None:
    version = hello.get("version", "")
    server = hello.get("server", "redis")
    numbers = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if len(numbers) < 2:
        report.add(
            WARNING,
            "version",
            "the server version is unknown (HELLO and INFO were refused)",
            node=label,
        )
        return
    details = {"server": server, "version": version}
    if numbers < MINIMUM_VERSION:
        report.add(
            ERROR,
            "version",
            f"{server} {version} is older than 7.0, which the store needs (scripts declared "
            "#!lua flags=no-writes on replicas, CLUSTER SHARDS, redis.acl_check_cmd)",
            node=label,
            details=details,
        )
    else:
        report.add(OK, "version", f"{server} {version}", node=label, details=details)


def _check_role(hello: dict[str, str], member: DataMember, label: str, report: CheckReport) -> None:
    role = hello.get("role")
    if role is None:
        return
    said = "master" if role == "master" else "replica"
    if said != member.role:
        report.add(
            WARNING,
            "role",
            f"the deployment names this node a {member.role} but it says it is a {said}: a "
            "failover may be under way (check again in a few seconds)",
            node=label,
        )
    else:
        report.add(OK, "role", f"a {said}", node=label, details={"role": said})


async def _check_acl(
    redis: RedisConfig, node: DataNode, key: str, name: str, report: CheckReport
) -> None:
    """Ask the server whether ``user`` may send each command the store sends here."""
    user = redis.username or "default"
    needs = data_needs(redis)
    checks = json.dumps([[need.concrete(key), need.bare] for need in needs])
    try:
        reply = await node.execute("EVAL", PROBE.source, 0, checks)
    except CommandError as exc:
        await _acl_without_eval(exc, node, user, report)
        return
    option = f"{_REDIS}.username"
    denied = 0
    for need, result in zip(needs, reply, strict=False):
        if result == 1:
            continue
        denied += 1
        if result == 2:
            report.add(
                ERROR,
                "acl",
                f"the ACL user {user!r} may run {need.name} but not on keys like {key!r} "
                f"({need.why}): add ~{_glob(name)}:*",
                node=node.label,
                option=option,
                fix=f"ACL SETUSER {user} ~{_glob(name)}:*",
            )
        elif result == 0:
            report.add(
                ERROR,
                "acl",
                f"the ACL user {user!r} may not run {need.name} ({need.why}): add {need.rule}",
                node=node.label,
                option=option,
                fix=f"ACL SETUSER {user} {need.rule}",
            )
        else:
            report.add(
                WARNING,
                "acl",
                f"cannot check {need.name}: {_text(result)}",
                node=node.label,
            )
    if not denied:
        report.add(
            OK,
            "acl",
            f"the ACL user {user!r} may run all {len(needs)} commands the store sends here, "
            f"on keys {_glob(name)}:*",
            node=node.label,
            details={"commands": sorted({need.name for need in needs})},
        )


async def _acl_without_eval(
    exc: CommandError, node: DataNode, user: str, report: CheckReport
) -> None:
    option = f"{_REDIS}.username"
    if exc.code != "NOPERM":
        report.add(
            WARNING,
            "acl",
            f"cannot check the ACL permissions (the probe script failed: {exc})",
            node=node.label,
        )
        return
    report.add(
        ERROR,
        "acl",
        f"the ACL user {user!r} may not run EVAL (a script a node has not cached is sent "
        "whole): add +eval",
        node=node.label,
        option=option,
        fix=f"ACL SETUSER {user} +eval",
    )
    # An unknown SHA: NOPERM if EVALSHA is refused, NOSCRIPT if it would run. Runs nothing.
    try:
        await node.execute("EVALSHA", "0" * 40, 0)
    except CommandError as refused:
        if refused.code == "NOPERM":
            report.add(
                ERROR,
                "acl",
                f"the ACL user {user!r} may not run EVALSHA (every store operation runs its "
                "script by SHA): add +evalsha",
                node=node.label,
                option=option,
                fix=f"ACL SETUSER {user} +evalsha",
            )
    report.add(
        WARNING,
        "acl",
        "the other commands the store sends could not be checked: the check asks the server "
        "inside an EVAL (redis.acl_check_cmd)",
        node=node.label,
    )


def _glob(name: str) -> str:
    # The ACL key pattern for the store's keys: glob characters in the name matched literally.
    return re.sub(r"([*?\[\]\\])", r"\\\1", name)


async def _check_cluster_settings(node: DataNode, report: CheckReport) -> None:
    """docs/cluster.md section 8: full coverage off, reads when down off."""
    wanted = {
        "cluster-require-full-coverage": (
            "no",
            "with yes, one shard down makes every node refuse every command: all sessions "
            "down for the loss of one shard",
        ),
        "cluster-allow-reads-when-down": (
            "no",
            "with yes, a node cut off from the majority serves sessions that were deleted or "
            "regenerated on the other side",
        ),
    }
    for setting, (good, why) in wanted.items():
        try:
            reply = await node.execute("CONFIG", "GET", setting)
        except CommandError as exc:
            report.add(
                WARNING,
                "server-config",
                f"cannot read {setting} ({exc}); docs/cluster.md section 8 recommends {good}",
                node=node.label,
            )
            continue
        values = dict(zip(map(_text, reply[::2]), map(_text, reply[1::2]), strict=False))
        value = values.get(setting)
        if value is None:
            continue
        if value == good:
            report.add(OK, "server-config", f"{setting} {value}", node=node.label)
        else:
            report.add(
                WARNING,
                "server-config",
                f"{setting} is {value}: {why} (docs/cluster.md section 8)",
                node=node.label,
                fix=f"CONFIG SET {setting} {good} (and in the node's config file)",
            )


# -- sentinels ------------------------------------------------------------------------------------


async def _check_sentinel(redis: RedisConfig, member: SentinelMember) -> list[Finding]:
    report = CheckReport()
    ha = redis.high_availability
    assert ha is not None
    label = member.node.label
    option = f"{SENTINEL_OPTION}.nodes"
    if not member.answered:
        auth = "authentication" in (member.problem or "")
        report.add(
            ERROR if auth else WARNING,
            "reachable",
            member.problem or "unreachable",
            node=label,
            option=f"{SENTINEL_OPTION}.sentinel_password" if auth else option,
        )
        return report.findings
    learned = "" if member.configured else " (learned from another sentinel)"
    report.add(OK, "reachable", f"sentinel{learned}", node=label)
    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    try:
        for _ in range(PINGS):
            began = loop.time()
            await member.node.execute("PING")
            rtts.append((loop.time() - began) * 1000)
    except RedisSessionError:
        rtts = []
    if rtts:
        _report_latency(rtts, label, redis, report)
    user = ha.sentinel_username or "default"
    for command, text in member.denied.items():
        if command == "SUBSCRIBE":
            channels = " ".join(f"&{c}" for c in CHANNELS)
            rule = f"+subscribe {channels}"
            why = "failover events are followed"
        else:
            rule = "+" + command.lower().replace(" ", "|")
            why = "the master is found and followed"
        report.add(
            ERROR,
            "acl",
            f"the sentinel's ACL user {user!r} may not run {command} ({why}): add {rule} ({text})",
            node=label,
            option=f"{SENTINEL_OPTION}.sentinel_username",
            fix=f"ACL SETUSER {user} {rule} (on the sentinel)",
        )
    if not member.denied:
        report.add(
            OK,
            "acl",
            f"the sentinel's ACL user {user!r} may ask for the master and subscribe to "
            "failover events",
            node=label,
        )
    if not member.knows_master:
        report.add(
            ERROR,
            "sentinel",
            f"this sentinel monitors no master named {ha.sentinel_name!r}",
            node=label,
            option=f"{SENTINEL_OPTION}.sentinel_name",
        )
    else:
        flags = set(member.master_flags.split(","))
        trouble = sorted(flags & {"s_down", "o_down", "failover_in_progress"})
        if trouble:
            report.add(
                WARNING,
                "sentinel",
                f"this sentinel reports the master as {', '.join(trouble)}",
                node=label,
            )
    return report.findings
