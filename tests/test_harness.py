"""Proofs that each server the harness starts is what it claims to be."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import servers
from .conftest import reset_server
from .servers import RESERVED_PORTS, RedisProcess, SentinelCluster, TLSFiles

PING = b"*1\r\n$4\r\nPING\r\n"


def client(port: int, **kwargs: object) -> redis.Redis:
    """A plain sync client with no retries, for probing a server."""
    options: dict[str, object] = {
        "host": servers.HOST,
        "port": port,
        "protocol": 2,
        "decode_responses": True,
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "retry": Retry(NoBackoff(), 0),
    }
    options.update(kwargs)
    return redis.Redis(**options)  # type: ignore[arg-type]


def tls_ping(
    proc: RedisProcess, ctx: ssl.SSLContext, server_hostname: str | None
) -> tuple[bytes, str | None]:
    """PING over a raw TLS socket; returns the reply and the negotiated protocol version."""
    assert proc.tls_port
    with (
        socket.create_connection((proc.host, proc.tls_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(PING)
        return tls.recv(64), tls.version()


def trusting(tls_files: TLSFiles) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    return ssl.create_default_context(cafile=tls_files.ca_file)


def test_standalone_answers_ping_on_tcp_and_unix_socket(redis_server: RedisProcess) -> None:
    """The standalone server answers PING on its own TCP port and its unix socket."""
    assert redis_server.port not in RESERVED_PORTS
    assert redis_server.port > 0
    with client(redis_server.port) as c:
        assert c.ping() is True
        assert c.config_get("port") == {"port": str(redis_server.port)}
    assert redis_server.unixsocket is not None
    with redis.Redis(unix_socket_path=redis_server.unixsocket, protocol=2) as c:
        assert c.ping() is True


@pytest.mark.skipif(not servers.IPV6_LOOPBACK, reason="this host has no ::1")
def test_standalone_listens_on_ipv6_loopback(redis_server: RedisProcess) -> None:
    """When ::1 exists, the server also listens there (for bracketed IPv6 host tests)."""
    with client(redis_server.port, host="::1") as c:
        assert c.ping() is True


def test_redis_fixture_starts_empty(redis: RedisProcess) -> None:
    """The ``redis`` fixture hands out a server with no keys in any database."""
    admin = redis.admin()
    assert admin.info("keyspace") == {}
    for db in (0, 5):
        with client(redis.port, db=db) as c:
            c.set("left-over", "x")
    assert admin.info("keyspace") != {}
    reset_server(redis)
    assert redis.admin().info("keyspace") == {}


def test_our_clients_lists_only_test_connections(redis: RedisProcess) -> None:
    """``our_clients`` shows a test's named connection and hides the harness's admin link."""
    assert redis.our_clients() == []
    with client(redis.port, client_name="probe-1") as c:
        c.ping()
        listed = redis.our_clients("probe-")
        assert [entry["name"] for entry in listed] == ["probe-1"]
        assert redis.our_clients("nobody-") == []


def test_acl_server_refuses_default_user(acl_redis: RedisProcess) -> None:
    """With the default user off, unauthenticated and default-user connections are refused."""
    with (
        client(acl_redis.port) as c,
        pytest.raises(redis.AuthenticationError, match="Authentication required"),
    ):
        c.ping()
    with (
        client(acl_redis.port, password="anything") as c,
        pytest.raises(redis.AuthenticationError, match=r"WRONGPASS|invalid"),
    ):
        c.ping()


def test_acl_server_admits_app_user(acl_redis: RedisProcess) -> None:
    """User ``app`` with its password is admitted, and the process advertises those credentials."""
    assert (acl_redis.username, acl_redis.password) == ("app", "app-secret-pw")
    with client(acl_redis.port, username="app", password="app-secret-pw") as c:
        assert c.acl_whoami() == "app"
        assert c.set("acl-probe", "1") is True
    section = acl_redis.redis_section()
    assert section["username"] == "app"
    assert section["password"] == "app-secret-pw"


def test_tls_server_refuses_plaintext(tls_redis: RedisProcess) -> None:
    """The TLS-only server has no plaintext port, and plain RESP on its TLS port fails."""
    assert tls_redis.port == 0
    assert tls_redis.tls_port is not None
    assert tls_redis.tls_port not in RESERVED_PORTS
    with (
        client(tls_redis.tls_port) as c,
        pytest.raises((redis.ConnectionError, redis.TimeoutError)),
    ):
        c.ping()


def test_tls_server_verifies_with_server_name(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """TLS with the test CA and server_name myredis.example.com verifies and answers PING."""
    reply, _ = tls_ping(tls_redis, trusting(tls_files), "myredis.example.com")
    assert reply == b"+PONG\r\n"
    assert tls_redis.redis_section()["tls"] == {
        "server_name": "myredis.example.com",
        "ca_file": tls_files.ca_file,
    }


def test_tls_certificate_is_not_valid_for_the_address(
    tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """Verifying the certificate against 127.0.0.1 fails: a client must send server_name."""
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
        tls_ping(tls_redis, trusting(tls_files), "127.0.0.1")


def test_tls_server_is_not_trusted_via_another_ca(
    tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """A client trusting only the untrusted CA rejects the server certificate."""
    ctx = ssl.create_default_context(cafile=tls_files.untrusted_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_ping(tls_redis, ctx, "myredis.example.com")


def test_tls12_server_refuses_tls13_only_client(
    tls12_redis: RedisProcess, tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """The 1.2-only server fails a client that insists on TLS 1.3, where the normal one does not."""
    ctx = trusting(tls_files)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError):
        tls_ping(tls12_redis, ctx, "myredis.example.com")
    assert tls_ping(tls_redis, ctx, "myredis.example.com") == (b"+PONG\r\n", "TLSv1.3")


def test_tls12_server_accepts_tls12(tls12_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """A default client negotiates TLS 1.2 with the 1.2-only server."""
    assert tls_ping(tls12_redis, trusting(tls_files), "myredis.example.com") == (
        b"+PONG\r\n",
        "TLSv1.2",
    )


def test_mtls_server_requires_client_certificate(
    mtls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """The mTLS server answers a client with a certificate from the CA and nobody else."""
    ctx = trusting(tls_files)
    ctx.load_cert_chain(tls_files.client_cert_file, tls_files.client_key_file)
    assert tls_ping(mtls_redis, ctx, "myredis.example.com")[0] == b"+PONG\r\n"
    assert mtls_redis.redis_section()["tls"]["certificate_file"] == tls_files.client_cert_file

    bad = trusting(tls_files)
    bad.load_cert_chain(tls_files.untrusted_client_cert_file, tls_files.untrusted_client_key_file)
    for ctx in (trusting(tls_files), bad):
        # With TLS 1.3 the refusal arrives as an alert on the first read, not in the handshake.
        try:
            reply, _ = tls_ping(mtls_redis, ctx, "myredis.example.com")
        except (ssl.SSLError, ConnectionError):
            continue
        assert reply == b""


def test_sentinels_agree_and_replica_is_synced(sentinel_cluster: SentinelCluster) -> None:
    """All three sentinels name the master, know each other, and the replica's link is up."""
    cluster = sentinel_cluster
    expected = (cluster.master.host, cluster.master.port)
    assert cluster.master_address() == expected
    for sentinel in cluster.sentinels:
        admin = sentinel.admin()
        reply = admin.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", cluster.name)
        assert (reply[0], int(reply[1])) == expected
        assert len(admin.execute_command("SENTINEL", "SENTINELS", cluster.name)) == 2
        assert len(admin.execute_command("SENTINEL", "REPLICAS", cluster.name)) == 1
    info = cluster.replica.admin().info("replication")
    assert info["role"] == "slave"
    assert info["master_port"] == cluster.master.port
    assert info["master_link_status"] == "up"
    assert cluster.master.our_clients() == []
    ports = [proc.port for proc in [cluster.master, cluster.replica, *cluster.sentinels]]
    assert not set(ports) & RESERVED_PORTS
    assert cluster.redis_section()["high_availability"]["nodes"] == [
        {"host": "127.0.0.1", "port": s.port} for s in cluster.sentinels
    ]


def test_sentinel_and_data_nodes_require_their_passwords(
    sentinel_cluster: SentinelCluster,
) -> None:
    """Sentinels refuse a wrong or missing password; data nodes want theirs, not the sentinels'."""
    cluster = sentinel_cluster
    port = cluster.sentinels[0].port
    with client(port, password="wrong") as c, pytest.raises(redis.AuthenticationError):
        c.ping()
    with (
        client(port) as c,
        pytest.raises(redis.AuthenticationError, match="Authentication required"),
    ):
        c.execute_command("SENTINEL", "MASTERS")
    with client(port, password=cluster.sentinel_password) as c:
        assert c.ping() is True
    with (
        client(cluster.master.port, password=cluster.sentinel_password) as c,
        pytest.raises(redis.AuthenticationError),
    ):
        c.ping()
    with client(cluster.master.port, password=cluster.password) as c:
        assert c.ping() is True


def test_killed_master_is_replaced(sentinel_cluster: SentinelCluster) -> None:
    """After SIGKILL of the master the sentinels promote the replica.

    Usually within a few seconds; but when the sentinels' first election splits its votes,
    the next attempt waits twice the failover timeout (5 s here), so the bound is generous.
    How fast is not asserted: a shared machine decides that, not the harness.
    """
    cluster = sentinel_cluster
    cluster.master.admin().set("before-failover", "1")
    assert cluster.master.admin().execute_command("WAIT", 1, 5000) == 1
    cluster.master.kill()
    new_master = cluster.wait_for_master((cluster.replica.host, cluster.replica.port), 30)
    assert new_master is cluster.replica
    cluster.rejoin_as_replica(cluster.master)
    assert cluster.master.admin().get("before-failover") == "1"


def test_pause_and_resume(fresh_redis: RedisProcess) -> None:
    """A paused server times a PING out; after resume it answers again."""
    with client(fresh_redis.port, socket_timeout=0.5) as c:
        assert c.ping() is True
        fresh_redis.pause()
        try:
            with pytest.raises(redis.TimeoutError):
                c.ping()
            assert fresh_redis.alive()
        finally:
            fresh_redis.resume()
        assert c.ping() is True


def test_restart_keeps_ports_and_config(redis_factory: Callable[..., RedisProcess]) -> None:
    """``restart`` brings a new process up on the same port with the same password."""
    proc = redis_factory(requirepass="pw", unixsocket=True)
    old_pid, port = proc.pid, proc.port
    proc.restart()
    assert proc.port == port
    assert proc.pid != old_pid
    assert proc.alive()
    with client(port, password="pw") as c:
        assert c.ping() is True
    with client(port) as c, pytest.raises(redis.AuthenticationError):
        c.ping()
    assert proc.unixsocket is not None
    assert Path(proc.unixsocket).is_socket()


def test_stop_and_kill_leave_no_process(redis_factory: Callable[..., RedisProcess]) -> None:
    """After ``stop`` or ``kill`` the pid is gone and the port refuses connections."""
    for end in (RedisProcess.stop, RedisProcess.kill):
        proc = redis_factory()
        proc.pause()  # stop and kill must work on a paused server as well
        end(proc)
        assert not proc.alive()
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proc.host, proc.port), timeout=2).close()


def test_missing_binary_fails_with_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-server on PATH the harness raises (tests fail, never skip) and says why."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="ensure-redis-server"):
        servers.redis_server_binary()


def test_no_harness_process_uses_reserved_ports(
    redis_server: RedisProcess, acl_redis: RedisProcess, tls_redis: RedisProcess
) -> None:
    """Every running harness server, and every admin client, avoids ports 6379 and 26379."""
    assert servers._live
    for proc in servers._live:
        assert proc.port not in RESERVED_PORTS
        assert proc.tls_port not in RESERVED_PORTS
        kwargs = proc.admin().connection_pool.connection_kwargs
        assert kwargs["host"] == "127.0.0.1"
        assert kwargs["port"] not in RESERVED_PORTS
    assert not {servers.free_port() for _ in range(50)} & RESERVED_PORTS


def test_old_server_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A redis-server older than 7.0 is refused with its version, not run into config errors."""
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.0.16 sha=00000000:0 bits=64'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"Redis 6\.0\.16.*7\.0 or newer"):
        servers.redis_server_binary()
