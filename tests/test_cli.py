"""The operator commands ``check`` and ``stats``, against real servers (single, ACL, TLS,
Sentinel, Cluster): what they report, their exit status, and that they write nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

import redis_session._cli_check as check_module
from redis_session import open_session_store
from redis_session.__main__ import main
from redis_session._cli_check import data_needs, script_commands
from redis_session._config import ClusterConfig, ClusterNodeConfig, RedisConfig

from .cluster_servers import RedisCluster
from .servers import RedisProcess, SentinelCluster, free_port, wait_until

SECRET = "cli tests: the current secret, long enough to be taken seriously"
OLD_SECRET = "cli tests: the previous secret, also long enough to be taken seriously"
NAME = "sess"
PASSWORD = "app-pw-never-printed"
#: What a check may send to a data node: nothing that writes.
READ_ONLY = {
    "ping",
    "hello",
    "info",
    "eval",
    "evalsha",
    "client|setname",
    "config|get",
    "cluster|shards",
    "cluster|nodes",  # the survey reads config epochs from it
    "readonly",
    "role",
    "select",
    "auth",
    "scan",
    "hmget",
    "type",
}


def write_config(tmp_path: Path, redis: dict[str, Any] | None, **session: Any) -> str:
    section: dict[str, Any] = {"name": NAME, "secret": SECRET, **session}
    if redis is not None:
        section["redis"] = redis
    path = tmp_path / f"session-{free_port()}.yml"
    path.write_text(yaml.safe_dump({"session": section}))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run a command with --json; return its exit status and its one JSON document."""
    status = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert SECRET not in out
    assert OLD_SECRET not in out
    assert PASSWORD not in out
    return status, json.loads(out)


def not_ok(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in document["findings"] if f["status"] != "ok"]


def commands_sent(*procs: RedisProcess) -> set[str]:
    found: set[str] = set()
    for proc in procs:
        stats = proc.admin().info("commandstats")
        found.update(name.removeprefix("cmdstat_") for name in stats)
    return found - {"config|resetstat", "debug"}  # the harness's and the tests' own


# -- the command line itself ----------------------------------------------------------------------


def test_help_does_not_load_the_commands() -> None:
    """``--help`` answers without importing what the commands need (the checks, the scan)."""
    code = (
        "import sys\n"
        "from redis_session.__main__ import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('redis_session._cli_')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "check" in result.stdout
    assert "stats" in result.stdout
    assert "sessions" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "['redis_session._cli_report']"


def test_the_permission_list_covers_every_command_the_scripts_call() -> None:
    """The scripts' commands come from their source, so the list cannot drift from them."""
    inside = set(script_commands())
    assert inside >= {"TIME", "HMGET", "HGET", "HSET", "PEXPIRE", "DEL", "EXISTS", "TYPE", "PTTL"}
    names = {need.name for need in data_needs(RedisConfig(host="h"))}
    assert inside <= names
    assert {"EVALSHA", "EVAL", "DEL", "PING", "CLIENT SETNAME"} <= names
    cluster = {need.name for need in data_needs(RedisConfig(cluster=_routed_cluster()))}
    assert {"CLUSTER SHARDS", "ASKING", "READONLY", "HMGET"} <= cluster


def _routed_cluster() -> ClusterConfig:
    return ClusterConfig(nodes=(ClusterNodeConfig(host="h"),), route_randomly=True)


# -- check: the configuration ---------------------------------------------------------------------


def test_check_lists_every_config_problem_with_its_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"host": "127.0.0.1", "port": 70000}, same_site="sideways")
    status, document = run(capsys, "check", config)
    assert status == 1
    options = {f["option"] for f in document["findings"] if f["status"] == "error"}
    assert {"session.redis.port", "session.same_site"} <= options
    assert document["status"] == "error"


def test_check_of_the_memory_provider_warns_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = run(capsys, "check", write_config(tmp_path, None))
    assert status == 0
    assert document["provider"] == "memory"
    assert [(f["check"], f["option"]) for f in not_ok(document)] == [("provider", "session.redis")]


def test_check_reports_an_unreachable_server_as_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"host": "127.0.0.1", "port": free_port(), "timeout": "1s"})
    status, document = run(capsys, "check", config)
    assert status == 1
    checks = {(f["check"], f["status"]) for f in document["findings"]}
    assert {("open", "error"), ("reachable", "error")} <= checks


def test_check_human_output(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json: one line per finding, then the tally; exit 0 when nothing is an error."""
    assert main(["check", write_config(tmp_path, redis.redis_section())]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("(server)")
    assert f"OK      acl           127.0.0.1:{redis.port}: the ACL user 'default' may run" in out
    assert out.rstrip().splitlines()[-1].startswith("0 error(s), 0 warning(s), ")
    assert out.rstrip().endswith(" ok: OK")


# -- check: a single server -----------------------------------------------------------------------


def test_check_of_a_healthy_server_is_all_ok_and_writes_nothing(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document = run(capsys, "check", write_config(tmp_path, redis.redis_section()))
    assert not_ok(document) == []
    assert status == 0
    checks = {f["check"] for f in document["findings"]}
    assert {"config", "open", "reachable", "latency", "version", "role", "acl"} <= checks
    latency = next(f for f in document["findings"] if f["check"] == "latency")
    assert 0 < latency["details"]["min_ms"] <= latency["details"]["max_ms"]
    assert commands_sent(redis) <= READ_ONLY
    assert redis.admin().dbsize() == 0
    # Every connection it opened is closed (the server notices within a moment).
    wait_until(lambda: redis.our_clients() == [], timeout=3.0)


#: The least-privilege ACL user that docs/cli.md gives for a single server.
LEAST = (
    f"app on >{PASSWORD} ~{NAME}:* resetchannels -@all +evalsha +eval +del +ping "
    "+client|setname +time +hmget +hget +hset +pexpire +exists +type +pttl +hgetall +hincrby "
    "+hdel +hsetnx"
)


def test_the_least_privilege_user_of_the_docs_passes(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ACL rule docs/cli.md recommends is enough, and the store works under it."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    assert (
        LEAST.replace(f">{PASSWORD}", ">password").replace(f"~{NAME}:", "~authelia_session:") in doc
    )
    proc = redis_factory(acl_users=["default off", LEAST])
    status, document = run(capsys, "check", write_config(tmp_path, proc.redis_section()))
    assert not_ok(document) == []
    assert status == 0

    async def walk() -> None:
        cfg = {"name": NAME, "secret": SECRET, "redis": proc.redis_section()}
        async with open_session_store(cfg) as store:
            session = await store.create({"n": 1})
            session = await store.regenerate(session)
            session.data["n"] = 2
            await store.save(session)
            assert (await store.load(session.id)).data == {"n": 2}  # type: ignore[union-attr]
            await store.delete(session)

    asyncio.run(walk())


def test_check_names_the_missing_evalsha_permission(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = redis_factory(
        acl_users=["default off", f"app on >{PASSWORD} ~{NAME}:* &* +@all -evalsha"]
    )
    status, document = run(capsys, "check", write_config(tmp_path, proc.redis_section()))
    assert status == 1
    errors = [f for f in not_ok(document) if f["status"] == "error"]
    assert [(f["check"], f["node"]) for f in errors] == [("acl", f"127.0.0.1:{proc.port}")]
    assert "the ACL user 'app' may not run EVALSHA" in errors[0]["message"]
    assert "add +evalsha" in errors[0]["message"]
    assert errors[0]["fix"] == "ACL SETUSER app +evalsha"
    assert errors[0]["option"] == "session.redis.username"


def test_check_names_a_key_pattern_the_user_may_not_touch(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Commands allowed but not on ``<name>:*``: every keyed one is named, with the key rule."""
    proc = redis_factory(acl_users=["default off", f"app on >{PASSWORD} ~other:* &* +@all"])
    status, document = run(capsys, "check", write_config(tmp_path, proc.redis_section()))
    assert status == 1
    errors = not_ok(document)
    named = {f["message"].split(" may run ")[1].split(" ")[0] for f in errors}
    assert {"EVALSHA", "EVAL", "DEL", "HSET", "HMGET", "PEXPIRE"} <= named
    assert "TIME" not in named
    assert "PING" not in named
    assert {f["fix"] for f in errors} == {f"ACL SETUSER app ~{NAME}:*"}


def test_check_without_eval_names_both_script_commands(
    redis_factory: Callable[..., RedisProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = redis_factory(
        acl_users=["default off", f"app on >{PASSWORD} ~* &* +@all -eval -evalsha"]
    )
    status, document = run(capsys, "check", write_config(tmp_path, proc.redis_section()))
    assert status == 1
    fixes = {f["fix"] for f in not_ok(document) if f["status"] == "error"}
    assert fixes == {"ACL SETUSER app +eval", "ACL SETUSER app +evalsha"}
    assert any("could not be checked" in f["message"] for f in not_ok(document))


def test_check_over_tls_and_the_skip_verify_warning(
    tls_redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = tls_redis.redis_section()
    status, document = run(capsys, "check", write_config(tmp_path, section))
    assert not_ok(document) == []
    assert status == 0
    reachable = next(f for f in document["findings"] if f["check"] == "reachable")
    assert reachable["details"]["tls"] is True
    assert "over TLS" in reachable["message"]

    section["tls"] = {**section["tls"], "skip_verify": True}
    status, document = run(capsys, "check", write_config(tmp_path, section))
    assert status == 0
    assert [(f["status"], f["option"]) for f in not_ok(document)] == [
        ("warning", "session.redis.tls.skip_verify")
    ]


# -- check: Sentinel and Cluster ------------------------------------------------------------------


def test_check_of_a_healthy_sentinel_setup_is_all_ok(
    sentinel_cluster: SentinelCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for node in sentinel_cluster.data_nodes:
        node.admin().config_resetstat()
    status, document = run(
        capsys, "check", write_config(tmp_path, sentinel_cluster.redis_section())
    )
    assert not_ok(document) == []
    assert status == 0
    assert document["provider"] == "sentinel"
    nodes = {f["node"] for f in document["findings"] if f["check"] == "reachable"}
    expected = {f"127.0.0.1:{p.address[1]}" for p in sentinel_cluster.data_nodes}
    expected |= {f"127.0.0.1:{s.address[1]}" for s in sentinel_cluster.sentinels}
    assert nodes == expected
    acl = [f for f in document["findings"] if f["check"] == "acl"]
    assert len(acl) == 5  # master, replica and three sentinels
    # Beside ours: the sentinels' hello messages (PUBLISH) and the replication link (REPLCONF).
    assert commands_sent(*sentinel_cluster.data_nodes) <= READ_ONLY | {"publish", "replconf"}

    # A sentinel ACL user that may not subscribe: each sentinel names the rule to add.
    for sentinel in sentinel_cluster.sentinels:
        sentinel.admin().execute_command(
            "ACL", "SETUSER", "watcher", "on", f">{PASSWORD}", "+@all", "-subscribe", "&*"
        )
    section = sentinel_cluster.redis_section()
    section["high_availability"]["sentinel_username"] = "watcher"
    section["high_availability"]["sentinel_password"] = PASSWORD
    status, document = run(capsys, "check", write_config(tmp_path, section))
    assert status == 1
    denied = not_ok(document)
    assert {f["node"] for f in denied} == {
        f"127.0.0.1:{s.address[1]}" for s in sentinel_cluster.sentinels
    }
    assert all(f["check"] == "acl" and "may not run SUBSCRIBE" in f["message"] for f in denied)
    assert all(f["option"] == "session.redis.high_availability.sentinel_username" for f in denied)
    assert all(
        f["fix"].startswith("ACL SETUSER watcher +subscribe &+selected-slave") for f in denied
    )

    # A wrong sentinel password: every sentinel refuses, each naming the option to fix.
    section = sentinel_cluster.redis_section()
    section["high_availability"]["sentinel_password"] = "wrong-" + PASSWORD
    status, document = run(capsys, "check", write_config(tmp_path, section))
    assert status == 1
    options = {f["option"] for f in not_ok(document) if f["check"] == "reachable"}
    assert options == {"session.redis.high_availability.sentinel_password"}

    # A configured sentinel that is not there, and a replica that died: warnings, not errors
    # (the store still works), each naming its node.
    section = sentinel_cluster.redis_section()
    ghost = free_port()
    section["high_availability"]["nodes"].append({"host": "127.0.0.1", "port": ghost})
    sentinel_cluster.replica.stop()
    status, document = run(capsys, "check", write_config(tmp_path, section))
    assert status == 0
    warned = {(f["check"], f["node"]) for f in not_ok(document)}
    assert {f["status"] for f in not_ok(document)} == {"warning"}
    assert ("reachable", f"127.0.0.1:{ghost}") in warned
    assert ("reachable", f"127.0.0.1:{sentinel_cluster.replica.port}") in warned
    # The sentinels go on listing the replica; once they see it down (after down-after-
    # milliseconds) that is a warning about it too.
    assert warned <= {
        ("reachable", f"127.0.0.1:{ghost}"),
        ("reachable", f"127.0.0.1:{sentinel_cluster.replica.port}"),
        ("role", f"127.0.0.1:{sentinel_cluster.replica.port}"),
    }


@contextmanager
def full_coverage(cluster: RedisCluster, value: str) -> Iterator[None]:
    for node in cluster.nodes:
        node.admin().config_set("cluster-require-full-coverage", value)
    try:
        yield
    finally:
        for node in cluster.nodes:
            node.admin().config_set("cluster-require-full-coverage", "yes")


def test_check_of_a_healthy_cluster_is_all_ok(
    redis_cluster: RedisCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_cluster.reset()
    section = {"cluster": {"nodes": redis_cluster.seeds()[:1], "route_randomly": True}}
    config = write_config(tmp_path, section)
    with full_coverage(redis_cluster, "no"):
        for node in redis_cluster.nodes:
            node.admin().config_resetstat()
        status, document = run(capsys, "check", config)
        sent = commands_sent(*redis_cluster.nodes)
    assert not_ok(document) == []
    assert status == 0
    assert document["provider"] == "cluster"
    nodes = {f["node"] for f in document["findings"] if f["check"] == "acl"}
    assert nodes == {f"127.0.0.1:{n.port}" for n in redis_cluster.nodes}
    roles = [f["details"]["role"] for f in document["findings"] if f["check"] == "role"]
    assert sorted(roles) == ["master"] * 3 + ["replica"] * 3
    assert sent <= READ_ONLY | {"replconf"}  # and the replication links' own

    # The server default: every node is warned about, naming the fix. (Without read routing:
    # replica connections send no READONLY, and the probe still runs there.)
    config = write_config(tmp_path, {"cluster": {"nodes": redis_cluster.seeds()}})
    status, document = run(capsys, "check", config)
    assert status == 0
    warned = not_ok(document)
    assert {f["node"] for f in warned} == nodes
    assert all(f["status"] == "warning" and f["check"] == "server-config" for f in warned)
    assert all("cluster-require-full-coverage is yes" in f["message"] for f in warned)


# -- stats ----------------------------------------------------------------------------------------


async def _fill(section: dict[str, Any]) -> None:
    """Old secret: 3 regular and 2 remember-me sessions, one regenerated (a tombstone).
    New secret: 1 session, and one old session saved again (which moves it to the new secret).
    """
    old = {"name": NAME, "secret": OLD_SECRET, "redis": section}
    async with open_session_store(old) as store:
        regular = [await store.create({"n": n}) for n in range(3)]
        for n in range(2):
            await store.create({"m": n}, remember_me=True)
        await store.regenerate(regular[0])
    new = {"name": NAME, "secret": SECRET, "previous_secrets": [OLD_SECRET], "redis": section}
    async with open_session_store(new) as store:
        await store.create({"new": True})
        moved = await store.load(regular[1].id)
        assert moved is not None
        moved.data["saved"] = True
        await store.save(moved)


def _stats(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, section: dict[str, Any]
) -> dict[str, Any]:
    config = write_config(tmp_path, section, previous_secrets=[OLD_SECRET])
    status, document = run(capsys, "stats", config, "--batch", "2")
    assert status == 0
    return document


def _assert_counts(document: dict[str, Any]) -> None:
    assert document["sessions"] == {"total": 6, "remember_me": 2, "regular": 4}
    assert document["tombstones"] == 1
    assert document["rotation"] == {
        "current_secret": 2,
        "previous_secrets": [{"option": "session.previous_secrets[0]", "sessions": 4}],
        "under_previous_secrets": 4,
        "no_configured_secret": 0,
    }


def test_stats_counts_sessions_by_kind_and_by_secret(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = redis.redis_section()
    asyncio.run(_fill(section))
    admin = redis.admin()
    admin.set(f"{NAME}:not-a-session", "x")
    admin.set("elsewhere:1", "x")  # outside the prefix: not counted
    before = admin.execute_command("DEBUG", "DIGEST")
    redis.admin().config_resetstat()
    document = _stats(capsys, tmp_path, section)
    _assert_counts(document)
    assert document["other_keys"] == {"string": 1}
    assert document["nodes"] == [{"node": f"127.0.0.1:{redis.port}", "keys": 8, "sessions": 6}]
    assert document["pool"]["max_connections"] == 8
    assert admin.execute_command("DEBUG", "DIGEST") == before
    assert commands_sent(redis) <= READ_ONLY
    assert "keys" not in commands_sent(redis)

    # A secret since removed: its sessions are counted apart (they no longer load).
    config = write_config(tmp_path, section)
    status, document = run(capsys, "stats", config)
    assert status == 0
    assert document["rotation"]["no_configured_secret"] == 4
    assert document["rotation"]["previous_secrets"] == []


def test_stats_scans_every_cluster_master(
    redis_cluster: RedisCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_cluster.reset()
    section = {"cluster": {"nodes": redis_cluster.seeds()}}
    asyncio.run(_fill(section))
    document = _stats(capsys, tmp_path, section)
    _assert_counts(document)
    masters = {f"127.0.0.1:{n.port}" for n in redis_cluster.masters()}
    assert {n["node"] for n in document["nodes"]} == masters
    assert sum(n["sessions"] for n in document["nodes"]) == 6


async def _users(section: dict[str, Any]) -> None:
    """Alice: two sessions. Bob: one, revoked (his index key goes, his state key stays)."""
    cfg = {"name": NAME, "secret": SECRET, "redis": section}
    async with open_session_store(cfg) as store:
        for _ in range(2):
            await store.create({}, user="alice", metadata={"ua": "x"})
        bob = await store.create({}, user="bob")
        await store.revoke_user("bob")
        # A revoked session's key goes at its next read (a load finds it dead).
        assert await store.load(bob.id) is None


def _assert_user_keys(document: dict[str, Any]) -> None:
    assert document["users"] == {"state_keys": 2, "index_keys": 1}
    assert document["sessions"]["total"] == 2
    assert document["other_keys"] == {}
    assert sum(n["keys"] for n in document["nodes"]) == 5


def test_stats_counts_the_users_keys_by_name(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = redis.redis_section()
    asyncio.run(_users(section))
    config = write_config(tmp_path, section)
    status, document = run(capsys, "stats", config)
    assert status == 0
    _assert_user_keys(document)
    assert main(["stats", config]) == 0
    assert "user keys            3  (state 2, index 1:" in capsys.readouterr().out


def test_stats_counts_the_users_keys_on_a_cluster(
    redis_cluster: RedisCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_cluster.reset()
    section = {"cluster": {"nodes": redis_cluster.seeds()}}
    asyncio.run(_users(section))
    status, document = run(capsys, "stats", write_config(tmp_path, section))
    assert status == 0
    _assert_user_keys(document)


def test_check_warns_of_a_rotation_without_index_secret(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/users.md section 4: previous_secrets without index_secret loses users' lists."""
    section = redis.redis_section()
    config = write_config(tmp_path, section, previous_secrets=[OLD_SECRET])
    status, document = run(capsys, "check", config)
    assert status == 0
    warned = not_ok(document)
    assert [(f["status"], f["check"], f["option"]) for f in warned] == [
        ("warning", "config", "session.index_secret")
    ]
    assert (
        "session.previous_secrets is set but session.index_secret is not" in (warned[0]["message"])
    )
    config = write_config(tmp_path, section, previous_secrets=[OLD_SECRET], index_secret=OLD_SECRET)
    status, document = run(capsys, "check", config)
    assert (status, not_ok(document)) == (0, [])


def test_stats_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No Redis, or Redis unreachable: exit 1 and the reason, as text or in the JSON document."""
    status, document = run(capsys, "stats", write_config(tmp_path, None))
    assert status == 1
    assert "stats needs session.redis" in document["error"]
    config = write_config(tmp_path, {"host": "127.0.0.1", "port": free_port(), "timeout": "1s"})
    assert main(["stats", config]) == 1
    assert capsys.readouterr().err.startswith("error: cannot connect to 127.0.0.1:")


# -- sessions list / revoke -----------------------------------------------------------------------


async def _logins(section: dict[str, Any], user: str, n: int) -> list[tuple[str, str]]:
    """Log ``user`` in ``n`` times (the second with remember-me); return (id, public id)."""
    cfg = {"name": NAME, "secret": SECRET, "redis": section}
    async with open_session_store(cfg) as store:
        made = []
        for i in range(n):
            session = await store.create(
                {"i": i}, user=user, metadata={"ua": f"browser {i}"}, remember_me=i == 1
            )
            assert session.public_id is not None
            made.append((session.id, session.public_id))
        return made


async def _loads(section: dict[str, Any], ids: list[str]) -> list[bool]:
    cfg = {"name": NAME, "secret": SECRET, "redis": section}
    async with open_session_store(cfg) as store:
        return [await store.load(i) is not None for i in ids]


def _assert_no_session_id(capsys_out: str, made: list[tuple[str, str]]) -> None:
    for session_id, _ in made:
        assert session_id not in capsys_out


def _sessions_commands(
    section: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, section)
    alice = asyncio.run(_logins(section, "alice", 3))
    bob = asyncio.run(_logins(section, "bob", 1))

    # list: every session of the user, oldest first, with what the app stored; no session id.
    status = main(["sessions", "list", "--user", "alice", config, "--json"])
    out = capsys.readouterr().out
    _assert_no_session_id(out, alice + bob)
    assert SECRET not in out
    document = json.loads(out)
    assert status == 0
    assert document["command"] == "sessions list"
    assert document["user"] == "alice"
    # Oldest first; sessions created in the same millisecond come in any order among them.
    assert [s["created_at"] for s in document["sessions"]] == sorted(
        s["created_at"] for s in document["sessions"]
    )
    order = {p: n for n, (_, p) in enumerate(alice)}
    listed = sorted(document["sessions"], key=lambda s: order[s["public_id"]])
    assert [s["public_id"] for s in listed] == [p for _, p in alice]
    assert [s["remember_me"] for s in listed] == [False, True, False]
    assert [s["metadata"] for s in listed] == [{"ua": f"browser {i}"} for i in range(3)]
    assert all(s["created_at"] <= s["last_active_at"] < s["expires_at"] for s in listed)
    # The text form: one line per session, public ids and metadata, no session id.
    assert main(["sessions", "list", "--user", "alice", config]) == 0
    text = capsys.readouterr().out
    _assert_no_session_id(text, alice)
    assert text.startswith("3 session(s) of user 'alice'")
    assert all(p in text for _, p in alice)
    assert '{"ua": "browser 1"}' in text
    assert "remember-me" in text

    # revoke --id: that one session ends; again: nothing to end, exit 1.
    status, document = run(capsys, "sessions", "revoke", "--id", alice[0][1], config)
    assert (status, document["revoked"]) == (0, True)
    assert asyncio.run(_loads(section, [i for i, _ in alice])) == [False, True, True]
    status, document = run(capsys, "sessions", "revoke", "--id", alice[0][1], config)
    assert (status, document["revoked"]) == (1, False)

    # revoke --user --all-but: every session but the one kept; bob's are untouched.
    status, document = run(
        capsys, "sessions", "revoke", "--user", "alice", "--all-but", alice[2][1], config
    )
    assert status == 0
    assert [s["public_id"] for s in document["remaining"]] == [alice[2][1]]
    assert asyncio.run(_loads(section, [i for i, _ in alice])) == [False, False, True]
    assert asyncio.run(_loads(section, [i for i, _ in bob])) == [True]

    # --all-but with a public id of another user's: refused, nothing ends.
    status, document = run(
        capsys, "sessions", "revoke", "--user", "alice", "--all-but", bob[0][1], config
    )
    assert status == 1
    assert "revoke_user(keep=...)" in document["error"]
    assert asyncio.run(_loads(section, [alice[2][0], bob[0][0]])) == [True, True]

    # revoke --user: all of them.
    status, document = run(capsys, "sessions", "revoke", "--user", "alice", config)
    assert (status, document["remaining"]) == (0, [])
    assert asyncio.run(_loads(section, [i for i, _ in alice])) == [False, False, False]
    status, document = run(capsys, "sessions", "list", "--user", "alice", config)
    assert (status, document["sessions"]) == (0, [])
    assert main(["sessions", "revoke", "--user", "bob", config]) == 0
    assert "revoked every session of user 'bob'" in capsys.readouterr().out
    assert asyncio.run(_loads(section, [i for i, _ in bob])) == [False]


def test_sessions_list_and_revoke_on_a_server(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sessions_commands(redis.redis_section(), tmp_path, capsys)


def test_sessions_list_and_revoke_on_a_cluster(
    redis_cluster: RedisCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_cluster.reset()
    _sessions_commands({"cluster": {"nodes": redis_cluster.seeds()}}, tmp_path, capsys)


def test_sessions_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No Redis; --all-but without --user; --user and --id together; neither."""
    status, document = run(capsys, "sessions", "list", "--user", "u", write_config(tmp_path, None))
    assert status == 1
    assert "sessions list needs session.redis" in document["error"]
    config = write_config(tmp_path, {"host": "127.0.0.1", "port": free_port()})
    status, document = run(capsys, "sessions", "revoke", "--id", "x" * 38, "--all-but", "y", config)
    assert status == 1
    assert "--all-but goes with --user" in document["error"]
    for argv in (["--user", "u", "--id", "x"], []):
        with pytest.raises(SystemExit) as exited:
            main(["sessions", "revoke", *argv, config])
        assert exited.value.code == 2
    capsys.readouterr()


def test_check_reports_config_deprecations_not_unrelated_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warning raised while the config loads but not about it is passed on, not a finding.

    Seen in CI: the garbage collector ran during the load and its ResourceWarnings about
    other tests' sockets became four "config" warnings of ``check``.
    """
    real = check_module.load_config

    def load_while_gc_warns(source: Any) -> Any:
        warnings.warn("unclosed transport (not ours)", ResourceWarning, stacklevel=1)
        return real(source)

    monkeypatch.setattr(check_module, "load_config", load_while_gc_warns)
    with pytest.warns(ResourceWarning, match="not ours"):
        status, document = run(capsys, "check", write_config(tmp_path, None, domain="a.example"))
    assert status == 0
    config = [
        (f["status"], f["message"][:22]) for f in document["findings"] if f["check"] == "config"
    ]
    # The deprecated `domain` is still reported, once; the ResourceWarning is not.
    assert config == [("warning", "deprecated since Authe")]
