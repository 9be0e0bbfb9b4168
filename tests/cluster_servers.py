"""A real Redis Cluster for the tests: 3 masters and 3 replicas on loopback, free ports only.

Each node is a ``redis-server`` started by ``servers.start_redis`` (same port choice, own
directory, stopped by its pid) with ``cluster-enabled yes``, its cluster bus on a second free
port (``cluster-port``, so the bus never lands on ``port + 10000`` that someone else holds), and
a short ``cluster-node-timeout`` so failovers take about a second. ``redis-cli --cluster create``
joins them and hands out the slots, as an operator would. Every wait has a deadline; nothing here
connects to a server it did not start (never 6379 or 26379).

``start_cluster(tls=..., acl_users=...)`` builds the same cluster TLS-only (clients, cluster bus
and replication all on TLS, ``port 0``) and/or with ACL users (the default user off, replicas
logging in to their master as a replication-only user); ``RedisCluster.redis_section`` is then
the ``session.redis`` mapping that reaches it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis

from redis_session._slots import key_slot

from .servers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    HOST,
    RedisProcess,
    TLSFiles,
    free_port,
    redis_server_binary,
    start_redis,
)

#: Milliseconds without an answer before a node is marked failing and its replica takes over.
NODE_TIMEOUT_MS = 1000
CREATE_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
MASTERS = 3
_START_ATTEMPTS = 3
#: The user replicas of an ACL cluster log in to their master as: replication, nothing else.
REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "replicator-pw"


def cli_binary() -> str:
    """``redis-cli`` (or ``valkey-cli``) beside the server binary the tests run, else on PATH."""
    server = Path(redis_server_binary())
    for name in ("valkey-cli", "redis-cli") if "valkey" in server.name else ("redis-cli",):
        beside = server.with_name(name)
        if beside.is_file():
            return str(beside)
        found = shutil.which(name)
        if found is not None:
            return found
    raise RuntimeError(f"no redis-cli beside {server} or on PATH: it creates the test cluster")


def _start_node(
    tmp_dir: Path,
    extra_conf: Sequence[str],
    *,
    tls: TLSFiles | None = None,
    acl_users: Sequence[str] = (),
) -> RedisProcess:
    """One cluster-enabled server; its bus port is chosen anew if another process holds it.

    With ``tls`` it listens on TLS only and its cluster bus and replication use TLS too; with
    ``acl_users`` it has those users (plus the harness admin and the replication user).
    """
    last: Exception | None = None
    for _attempt in range(_START_ATTEMPTS):
        conf = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-port {free_port()}",
            f"cluster-node-timeout {NODE_TIMEOUT_MS}",
            # Announce the address the tests connect to, whatever the bus saw.
            f"cluster-announce-ip {HOST}",
            # A replica may fail over however long its link was down: tests kill masters soon
            # after start, when the default validity check could refuse the promotion.
            "cluster-replica-validity-factor 0",
            *extra_conf,
        ]
        kwargs: dict[str, Any] = {}
        if tls is not None:
            # The bus and replication speak TLS as well: nothing on this node is plaintext.
            conf += ["tls-cluster yes", "tls-replication yes"]
            kwargs.update(tls=tls, tls_only=True)
        if acl_users:
            conf += [
                f"masteruser {REPLICATION_USER}",
                f"masterauth {REPLICATION_PASSWORD}",
            ]
            kwargs["acl_users"] = [
                *acl_users,
                f"{REPLICATION_USER} on >{REPLICATION_PASSWORD} -@all +psync +replconf +ping",
            ]
        try:
            return start_redis(tmp_dir, extra_conf=conf, **kwargs)
        except RuntimeError as exc:  # the bus port was taken in the meantime
            if "free port" not in str(exc):
                raise
            last = exc
    raise RuntimeError(f"cluster node could not get free ports: {last}")


@attrs.define(eq=False)
class RedisCluster:
    """Six cluster nodes as started; roles may have changed since (failover, tests)."""

    nodes: list[RedisProcess]
    #: The TLS files of a TLS-only cluster (None: plaintext).
    tls: TLSFiles | None = None

    # -- who is who, now --

    def node_at(self, addr: tuple[str, int]) -> RedisProcess:
        """The node listening on ``addr``."""
        for node in self.nodes:
            if node.address == tuple(addr):
                return node
        raise KeyError(addr)

    def port_of(self, node: RedisProcess) -> int:
        """The port clients reach ``node`` on (its TLS port on a TLS-only cluster)."""
        return node.address[1]

    def role(self, node: RedisProcess) -> str:
        """``master`` or ``slave``, as the node's ``ROLE`` says now."""
        return str(node.admin().execute_command("ROLE")[0])

    def masters(self) -> list[RedisProcess]:
        """Running nodes that are masters and serve at least one slot, in port order."""
        found = [
            node
            for node in self.nodes
            if node.alive() and self.role(node) == "master" and _owned_slots(node) > 0
        ]
        return sorted(found, key=lambda n: n.address[1])

    def replicas_of(self, master: RedisProcess) -> list[RedisProcess]:
        """Running nodes that replicate ``master`` (by ``INFO replication``)."""
        found = []
        for node in self.nodes:
            if node is master or not node.alive():
                continue
            info = node.admin().info("replication")
            if info.get("role") == "slave" and info.get("master_port") == master.address[1]:
                found.append(node)
        return found

    def master_of_slot(self, slot: int) -> RedisProcess:
        """The node that serves ``slot`` according to the first live node's ``CLUSTER SLOTS``."""
        for node in self.nodes:
            if not node.alive():
                continue
            for first, last, master, *_ in node.admin().execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return self.node_at((master[0], int(master[1])))
        raise LookupError(f"no node serves slot {slot}")

    def serves(self, node: RedisProcess, slot: int) -> bool:
        """Whether ``node``'s own ``CLUSTER SLOTS`` names it the master of ``slot``.

        Asked of the node itself: another node may not have heard of a failover yet.
        """
        for first, last, master, *_ in node.admin().execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return self.node_at((master[0], int(master[1]))) is node
        return False

    def seeds(self) -> list[dict[str, Any]]:
        """Every node as a ``nodes`` entry of a session config."""
        return [{"host": n.host, "port": n.address[1]} for n in self.nodes]

    def redis_section(self, **cluster_options: Any) -> dict[str, Any]:
        """The ``session.redis`` mapping that reaches this cluster: every node a seed, plus
        ``tls`` (CA and server name) and ``username``/``password`` when the cluster has them.
        """
        section = {
            k: v for k, v in self.nodes[0].redis_section().items() if k not in ("host", "port")
        }
        section["cluster"] = {"nodes": self.seeds(), **cluster_options}
        return section

    # -- waiting --

    def problems(self) -> list[str]:
        """What keeps the cluster from being ready; empty when it is.

        Ready: every node up, agreeing the state is ok with all 16384 slots assigned and all six
        nodes known and ``online`` in ``CLUSTER SHARDS`` (a replica is ``loading`` there until
        gossip brings its first replication offset); three masters, each with a replica whose
        link is up.
        """
        found = []
        masters = 0
        for node in self.nodes:
            if not node.alive():
                found.append(f"{node.address[1]}: not running")
                continue
            try:
                info = _cluster_info(node)
                role = self.role(node)
                repl = node.admin().info("replication")
            except redis.RedisError as exc:
                found.append(f"{node.address[1]}: {exc!r}")
                continue
            port = node.address[1]
            if info.get("cluster_state") != "ok":
                found.append(f"{port}: cluster_state {info.get('cluster_state')}")
            if info.get("cluster_slots_assigned") != "16384":
                found.append(f"{port}: slots assigned {info.get('cluster_slots_assigned')}")
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                found.append(f"{port}: knows {info.get('cluster_known_nodes')} nodes")
            found += [f"health: {port} sees {p} {health}" for p, health in _shards_health(node)]
            if role == "master":
                masters += 1
                if repl.get("connected_slaves") != 1:
                    found.append(f"{port}: {repl.get('connected_slaves')} replicas")
            elif repl.get("master_link_status") != "up":
                found.append(f"{port}: master link {repl.get('master_link_status')}")
            found += [f"{port}: open slot {text}" for text in _open_slots(node)]
        if masters != MASTERS:
            found.append(f"{masters} masters")
        return found

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until :meth:`problems` is empty and every replica acknowledges a fresh write."""
        deadline = time.monotonic() + timeout
        streamed = False
        while problems := self.problems():
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready in {timeout}s: {problems}")
            if not streamed and all(p.startswith("health:") for p in problems):
                # A replica reads "loading" until gossip carries a replication offset above 0,
                # which takes a write: make one on each master instead of waiting for traffic.
                self.wait_streaming(max(1.0, deadline - time.monotonic()))
                streamed = True
            time.sleep(0.05)
        self.wait_streaming(max(1.0, deadline - time.monotonic()))

    def wait_streaming(self, timeout: float = 5.0) -> None:
        """Have each master's replica acknowledge a write (``WAIT``), so a failover loses nothing.

        "Link up" is not enough: after a full sync Redis 7 holds the write stream back until the
        replica's first ``REPLCONF ACK`` (see ``SentinelCluster.wait_streaming``).
        """
        deadline = time.monotonic() + timeout
        for master in self.masters():
            key = _key_on(master, "harness:stream:")
            while True:
                master.admin().set(key, "1")
                acked = master.admin().execute_command("WAIT", 1, 200)
                master.admin().delete(key)
                if acked >= 1:
                    break
                if time.monotonic() > deadline:
                    msg = f"replica of {master.address[1]} never acknowledged a write"
                    raise TimeoutError(msg)

    # -- faults (the chaos scenarios) --

    def node_id(self, node: RedisProcess) -> str:
        """The node's cluster id (``CLUSTER MYID``)."""
        return str(node.admin().execute_command("CLUSTER", "MYID"))

    def wait_promoted(self, replica: RedisProcess, timeout: float = 15.0) -> float:
        """Wait until ``replica`` has promoted itself to master of some slots; return when.

        The time (``time.monotonic()``) is that of the first poll that saw it, 10 ms apart.
        """
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                if self.role(replica) == "master" and _owned_slots(replica) > 0:
                    return time.monotonic()
            if time.monotonic() > deadline:
                msg = f"replica {replica.address[1]} was not promoted within {timeout}s"
                raise TimeoutError(msg)
            time.sleep(0.01)

    def rejoin(self, node: RedisProcess, timeout: float = READY_TIMEOUT) -> RedisProcess:
        """Bring back a node that was killed (restart) or hung (SIGCONT); return its master.

        The cluster, not the harness, makes a returning old master a replica of its successor;
        this waits until it replicates some master and the whole cluster is ready again.
        """
        if node.paused:
            node.resume()
        if not node.alive():
            node.restart()
        deadline = time.monotonic() + timeout

        def replicating() -> int | None:
            with contextlib.suppress(redis.RedisError):
                info = node.admin().info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") == "up":
                    return int(info["master_port"])
            return None

        while (port := replicating()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node {node.address[1]} did not rejoin as a replica in {timeout}s"
                )
            time.sleep(0.05)
        self.wait_ready(max(1.0, deadline - time.monotonic()))
        return self.node_at((node.host, port))

    def keys_by_slot(
        self, node: RedisProcess | None = None, *, skip_prefix: str = "harness:"
    ) -> dict[int, list[str]]:
        """Every key ``node`` (default: every master) holds, by slot, per ``CLUSTER KEYSLOT``."""
        found: dict[int, list[str]] = {}
        for master in self.masters() if node is None else [node]:
            admin = master.admin()
            keys = [k for k in admin.scan_iter(count=1000) if not k.startswith(skip_prefix)]
            pipe = admin.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("CLUSTER", "KEYSLOT", key)
            for key, slot in zip(keys, pipe.execute(), strict=True):
                found.setdefault(int(slot), []).append(key)
        return found

    def migrate_slot(
        self,
        slot: int,
        target: RedisProcess,
        *,
        batch: int = 1,
        between: Callable[[RedisProcess], None] | None = None,
        first: Sequence[str] = (),
        migrate_timeout_ms: int = 5000,
    ) -> SlotMigration:
        """Move ``slot`` to the master ``target`` the way ``redis-cli --cluster reshard`` does.

        ``SETSLOT IMPORTING`` on the target, ``MIGRATING`` on the source, then ``MIGRATE`` of
        ``batch`` keys at a time, calling ``between(source)`` after each batch and once more when
        the source is empty (meanwhile the source answers ASK for the keys it no longer has);
        then ``SETSLOT NODE`` on the target, the source and every other master (MOVED from then
        on). Keys created during the move land on the target (by ASK); none is left behind.
        The keys in ``first`` (if still there) move before the others.
        """
        source = self.master_of_slot(slot)
        if source is target:
            raise ValueError(f"slot {slot} is already served by {target.address[1]}")
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.admin().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.admin().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        auth: list[str] = []
        if target.admin_password is not None:
            auth = ["AUTH2", target.admin_username or "default", target.admin_password]
        moved = batches = 0
        chosen = list(first)

        def next_batch() -> list[str]:
            if chosen:
                keys = chosen[:batch]
                del chosen[:batch]
                return keys
            return list(source.admin().execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch))

        while keys := next_batch():
            reply = source.admin().execute_command(
                "MIGRATE", *target.address, "", 0, migrate_timeout_ms, *auth, "KEYS", *keys
            )
            batches += 1
            moved += len(keys) if reply == "OK" else 0  # NOKEY: deleted meanwhile
            if between is not None:
                between(source)
        if between is not None and batches:
            between(source)
        others = [m for m in self.masters() if m is not source and m is not target]
        for node in (target, source, *others):
            node.admin().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return SlotMigration(slot, source.address[1], target.address[1], moved, batches)

    def close_migrations(self) -> list[str]:
        """``SETSLOT STABLE`` every slot a running node has importing or migrating."""
        closed = []
        for node in self.nodes:
            if not node.alive() or node.paused:
                continue
            for text in _open_slots(node):
                slot = int(text.split("-", 1)[0])
                node.admin().execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
                closed.append(f"{node.address[1]}: {text}")
        return closed

    def kill_clients(self, node: RedisProcess, kind: str = "normal") -> int:
        """``CLIENT KILL TYPE kind`` on ``node`` (the harness's own link spared); how many."""
        return int(node.admin().client_kill_filter(_type=kind, skipme=True))

    def errorstats(self) -> Counter[str]:
        """Error replies by prefix (``MOVED``, ``ASK``, ``TRYAGAIN``...) summed over running nodes.

        ``INFO errorstats``, which ``reset()`` zeroes (``CONFIG RESETSTAT``).
        """
        total: Counter[str] = Counter()
        for node in self.nodes:
            if not node.alive() or node.paused:
                continue
            for name, fields in node.admin().info("errorstats").items():
                total[name.removeprefix("errorstat_")] += int(fields["count"])
        return total

    # -- between tests --

    def reset(self, timeout: float = READY_TIMEOUT) -> None:
        """Bring the cluster back to a clean state: every node running, ready, empty.

        Nodes a test stopped, killed or paused are brought back (a restarted old master rejoins
        as a replica of its successor, as Redis Cluster decides). Data and scripts are flushed,
        stats reset, clients other than the harness's own disconnected. Roles are not restored:
        ask :meth:`masters` rather than remembering who was master.
        """
        for node in self.nodes:
            if node.paused:
                node.resume()
            if not node.alive():
                node.restart()
        self.close_migrations()
        self.wait_ready(timeout)
        for node in self.masters():
            node.admin().flushall()  # replicated to the replica
        for node in self.nodes:
            admin = node.admin()
            admin.client_kill_filter(_type="normal", skipme=True)
            admin.client_kill_filter(_type="pubsub", skipme=True)
            admin.script_flush()  # the script cache is per node, flushed on each
            admin.config_resetstat()
        self.wait_streaming()

    def stop(self) -> None:
        """Stop every node by its pid (replicas first, so no failover starts during teardown)."""
        ordered = sorted(self.nodes, key=lambda n: n.alive() and self._is_master(n))
        for node in ordered:
            node.stop()

    def _is_master(self, node: RedisProcess) -> bool:
        with contextlib.suppress(redis.RedisError):
            return self.role(node) == "master"
        return False


@attrs.frozen
class SlotMigration:
    """What :meth:`RedisCluster.migrate_slot` did."""

    slot: int
    source: int
    target: int
    #: Keys moved by ``MIGRATE`` (keys deleted before their turn are not counted).
    keys: int
    batches: int


#: ``[slot->-id]`` (migrating) or ``[slot-<-id]`` (importing) in a ``CLUSTER NODES`` line.
_OPEN_SLOT = re.compile(r"\[(\d+-[<>]-[0-9a-f]+)\]")


def _open_slots(node: RedisProcess) -> list[str]:
    """Slots ``node`` itself has importing or migrating, as ``CLUSTER NODES`` shows them."""
    text = str(node.admin().execute_command("CLUSTER", "NODES"))
    found = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 2 and "myself" in fields[2].split(","):
            found += [m.group(1) for m in _OPEN_SLOT.finditer(line)]
    return found


def _cluster_info(node: RedisProcess) -> dict[str, str]:
    text = node.admin().execute_command("CLUSTER", "INFO")
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def _shards_health(node: RedisProcess) -> list[tuple[int, str]]:
    """``(port, health)`` of every node ``node`` does not see ``online``.

    A TLS-only node reports ``tls-port`` (and no plaintext ``port``) there.
    """
    return [
        (int(fields.get("port") or fields.get("tls-port") or 0), str(fields["health"]))
        for shard in node.admin().execute_command("CLUSTER", "SHARDS")
        for raw in dict(zip(shard[::2], shard[1::2], strict=True))["nodes"]
        if (fields := dict(zip(raw[::2], raw[1::2], strict=True)))["health"] != "online"
    ]


def _owned_ranges(node: RedisProcess) -> list[tuple[int, int]]:
    """Slot ranges ``node`` itself serves, from its own ``CLUSTER SLOTS``."""
    ranges = []
    for first, last, master, *_ in node.admin().execute_command("CLUSTER", "SLOTS"):
        if int(master[1]) == node.address[1]:
            ranges.append((int(first), int(last)))
    return ranges


def _owned_slots(node: RedisProcess) -> int:
    return sum(last - first + 1 for first, last in _owned_ranges(node))


def _key_on(node: RedisProcess, prefix: str) -> str:
    """A key ``prefix{tag}`` that ``node`` serves (slot computed here, checked by the server)."""
    ranges = _owned_ranges(node)
    for i in range(100_000):
        key = f"{prefix}{{{i}}}"
        slot = key_slot(key.encode())
        if any(first <= slot <= last for first, last in ranges):
            assert node.admin().execute_command("CLUSTER", "KEYSLOT", key) == slot
            return key
    raise LookupError(f"no key found for the slots of {node.address[1]}")


def start_cluster(
    tmp_dir: Path,
    *,
    extra_conf: Sequence[str] = (),
    tls: TLSFiles | None = None,
    acl_users: Sequence[str] = (),
    timeout: float = CREATE_TIMEOUT,
) -> RedisCluster:
    """Start six nodes, join them with ``redis-cli --cluster create --cluster-replicas 1``.

    ``tls``: every node listens on TLS only (``port 0``), with ``tls-cluster`` and
    ``tls-replication`` on; ``redis-cli`` joins them over TLS with the harness client
    certificate. ``acl_users``: ACL rules as for ``servers.start_redis`` (the first user with a
    password is the one ``redis_section`` names); replicas log in as a replication-only user,
    and ``redis-cli`` as the harness admin (password from the environment, not the command
    line). Returns once the cluster is ready (:meth:`RedisCluster.wait_ready`); on any failure
    every node started so far is stopped before the error propagates.
    """
    deadline = time.monotonic() + timeout
    cluster = RedisCluster(nodes=[], tls=tls)
    try:
        for _ in range(2 * MASTERS):
            cluster.nodes.append(_start_node(tmp_dir, extra_conf, tls=tls, acl_users=acl_users))
        done = subprocess.run(
            _create_argv(cluster, tls=tls, acl=bool(acl_users)),
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
            stdin=subprocess.DEVNULL,
            env=_cli_env(acl=bool(acl_users)),
        )
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            output = done.stdout + done.stderr
            msg = f"redis-cli --cluster create failed ({done.returncode}):\n{output}"
            raise RuntimeError(msg)
        cluster.wait_ready(max(1.0, deadline - time.monotonic()))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _create_argv(cluster: RedisCluster, *, tls: TLSFiles | None, acl: bool) -> list[str]:
    argv = [cli_binary()]
    if tls is not None:
        argv += [
            "--tls",
            "--sni",
            tls.server_name,
            "--cacert",
            tls.ca_file,
            "--cert",
            tls.client_cert_file,
            "--key",
            tls.client_key_file,
        ]
    if acl:
        argv += ["--user", ADMIN_USER, "--no-auth-warning"]
    return [
        *argv,
        "--cluster",
        "create",
        *(f"{n.host}:{n.address[1]}" for n in cluster.nodes),
        "--cluster-replicas",
        "1",
        "--cluster-yes",
    ]


def _cli_env(*, acl: bool) -> dict[str, str] | None:
    """The environment of ``redis-cli``: the admin password in ``REDISCLI_AUTH``, if any."""
    if not acl:
        return None
    return {**os.environ, "REDISCLI_AUTH": ADMIN_PASSWORD}
