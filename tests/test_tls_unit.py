"""TLS pieces that need no server: context settings, config errors, error descriptions."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import attrs
import pytest
import redis.exceptions
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from redis_session._config import RedisConfig, Secret, SessionConfig, TLSConfig
from redis_session._config_loading import resolve_config
from redis_session._errors import ConfigError, StoreUnavailable
from redis_session._tls import (
    ClosedAfterHandshakeError,
    TLSConnection,
    build_ssl_context,
    describe_tls_error,
    tls_connection_kwargs,
)

NODE = "127.0.0.1:6380"
NAME = "myredis.example.com"


@attrs.frozen
class Pems:
    ca: str
    client_cert: str
    client_key: str
    other_key: str
    encrypted_key: str
    garbage: str


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Pems:
    d = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client = ca.issue_cert("client.example.com")
    client.cert_chain_pems[0].write_to_path(str(d / "client.crt"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    ca.issue_cert("other.example.com").private_key_pem.write_to_path(str(d / "other.key"))
    key = ec.generate_private_key(ec.SECP256R1())
    (d / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    (d / "garbage.pem").write_text("this is not PEM\n")
    return Pems(
        ca=str(d / "ca.pem"),
        client_cert=str(d / "client.crt"),
        client_key=str(d / "client.key"),
        other_key=str(d / "other.key"),
        encrypted_key=str(d / "encrypted.key"),
        garbage=str(d / "garbage.pem"),
    )


def config_problem(tls: TLSConfig) -> str:
    with pytest.raises(ConfigError) as info:
        build_ssl_context(tls)
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def rule_problems(tls: TLSConfig, host: str = "redis.internal") -> tuple[str, ...]:
    """The problems the config layer finds in a redis section with this tls section."""
    cfg = SessionConfig(secret=Secret("s"), redis=RedisConfig(host=host, tls=tls))
    with pytest.raises(ConfigError) as info:
        resolve_config(cfg)
    return tuple(map(str, info.value.problems))


# --- context settings ------------------------------------------------------------------------


def test_default_context_verifies_certificate_and_host_name() -> None:
    """By default the certificate is required and the host name checked, from TLS 1.2 up."""
    ctx = build_ssl_context(TLSConfig())
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert ctx.protocol == ssl.PROTOCOL_TLS_CLIENT


def test_versions_are_applied() -> None:
    """minimum_version and maximum_version become the context's bounds."""
    ctx = build_ssl_context(
        TLSConfig(minimum_version=ssl.TLSVersion.TLSv1_3, maximum_version=ssl.TLSVersion.TLSv1_3)
    )
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3


def test_old_minimum_version_is_allowed_without_deprecation_warning() -> None:
    """TLS1.0 is a legal Authelia minimum; setting it does not trip the DeprecationWarning."""
    ctx = build_ssl_context(TLSConfig(minimum_version=ssl.TLSVersion.TLSv1))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1


# The rules on tls options are the config layer's alone (load_config, resolve_config); a
# context is only built from a configuration that passed them.


def test_ssl3_minimum_is_refused() -> None:
    """SSL 3.0 is below Authelia's floor and is reported against minimum_version."""
    assert rule_problems(TLSConfig(minimum_version=ssl.TLSVersion.SSLv3)) == (
        "session.redis.tls.minimum_version: must not be below TLS1.0, got SSLv3",
    )


def test_empty_version_range_is_refused() -> None:
    """A maximum below the minimum is a config error, not a handshake that can never work."""
    tls = TLSConfig(minimum_version=ssl.TLSVersion.TLSv1_3, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert rule_problems(tls) == (
        "session.redis.tls.maximum_version: must not be below minimum_version (TLS1.3), got TLS1.2",
    )


def test_skip_verify_turns_checks_off_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """skip_verify means CERT_NONE and no host name check, and says so in a warning."""
    with caplog.at_level(logging.WARNING, logger="redis_session"):
        ctx = build_ssl_context(TLSConfig(server_name=NAME, skip_verify=True))
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.check_hostname is False
    [record] = [r for r in caplog.records if r.name == "redis_session"]
    assert record.levelno == logging.WARNING
    assert NAME in record.getMessage()
    assert "verification is OFF" in record.getMessage()


def test_skip_verify_warning_names_host_without_server_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without server_name the warning names the host it was given."""
    with caplog.at_level(logging.WARNING, logger="redis_session"):
        tls_connection_kwargs(TLSConfig(skip_verify=True), "redis.internal")
    assert "redis.internal" in caplog.text


def test_no_warning_when_verifying(caplog: pytest.LogCaptureFixture) -> None:
    """A verifying context logs nothing."""
    with caplog.at_level(logging.DEBUG, logger="redis_session"):
        build_ssl_context(TLSConfig(server_name=NAME))
    assert caplog.records == []


def test_ca_file_is_trusted(pems: Pems) -> None:
    """ca_file adds its CA to the trust store on top of the system's."""
    before = build_ssl_context(TLSConfig()).cert_store_stats()["x509_ca"]
    ctx = build_ssl_context(TLSConfig(ca_file=pems.ca))
    assert ctx.cert_store_stats()["x509_ca"] == before + 1


def test_client_certificate_is_loaded(pems: Pems) -> None:
    """certificate_file and key_file load for mutual TLS."""
    build_ssl_context(TLSConfig(certificate_file=pems.client_cert, key_file=pems.client_key))


# --- file problems become ConfigError --------------------------------------------------------


def test_missing_ca_file(tmp_path: Path) -> None:
    """A missing ca_file names the option, the path and the reason."""
    path = tmp_path / "nope.pem"
    assert config_problem(TLSConfig(ca_file=str(path))) == (
        f"session.redis.tls.ca_file: cannot load {path}: No such file or directory"
    )


def test_ca_file_without_certificates(pems: Pems) -> None:
    """A ca_file that holds no PEM certificate is a config error, not an ssl.SSLError."""
    assert config_problem(TLSConfig(ca_file=pems.garbage)) == (
        f"session.redis.tls.ca_file: cannot load {pems.garbage}: no certificate or crl found"
    )


def test_ca_file_is_a_directory(tmp_path: Path) -> None:
    """A directory given as ca_file is reported, not raised as IsADirectoryError."""
    assert config_problem(TLSConfig(ca_file=str(tmp_path))) == (
        f"session.redis.tls.ca_file: cannot load {tmp_path}: Is a directory"
    )


def test_missing_certificate_file(pems: Pems, tmp_path: Path) -> None:
    """A missing certificate_file names that option."""
    path = tmp_path / "missing.crt"
    problem = config_problem(TLSConfig(certificate_file=str(path), key_file=pems.client_key))
    assert problem == (
        f"session.redis.tls.certificate_file: cannot load {path}: No such file or directory"
    )


def test_missing_key_file(pems: Pems, tmp_path: Path) -> None:
    """A missing key_file names that option."""
    path = tmp_path / "missing.key"
    problem = config_problem(TLSConfig(certificate_file=pems.client_cert, key_file=str(path)))
    assert problem == f"session.redis.tls.key_file: cannot load {path}: No such file or directory"


def test_key_does_not_match_certificate(pems: Pems) -> None:
    """A key from another certificate is reported against key_file."""
    problem = config_problem(TLSConfig(certificate_file=pems.client_cert, key_file=pems.other_key))
    assert problem == (
        f"session.redis.tls.key_file: {pems.other_key} is not the private key of the certificate"
        f" in {pems.client_cert}"
    )


def test_bad_certificate_pem(pems: Pems) -> None:
    """OpenSSL's vague 'PEM lib' is narrowed down to the certificate file."""
    problem = config_problem(TLSConfig(certificate_file=pems.garbage, key_file=pems.client_key))
    assert problem == (
        f"session.redis.tls.certificate_file: cannot load {pems.garbage}: no PEM certificate found"
    )


def test_bad_key_pem(pems: Pems) -> None:
    """OpenSSL's vague 'PEM lib' is narrowed down to the key file."""
    problem = config_problem(TLSConfig(certificate_file=pems.client_cert, key_file=pems.garbage))
    assert problem == (
        f"session.redis.tls.key_file: cannot load {pems.garbage}: no usable PEM private key found"
    )


def test_encrypted_key_is_refused_without_prompting(pems: Pems) -> None:
    """An encrypted key is a config error; OpenSSL never prompts on the terminal."""
    problem = config_problem(
        TLSConfig(certificate_file=pems.client_cert, key_file=pems.encrypted_key)
    )
    assert problem.startswith(
        f"session.redis.tls.key_file: cannot load {pems.encrypted_key}: the private key is"
        " encrypted"
    )


def test_certificate_file_without_key(pems: Pems) -> None:
    """A certificate file with no key in it asks for key_file."""
    problem = config_problem(TLSConfig(certificate_file=pems.client_cert))
    assert problem == (
        f"session.redis.tls.certificate_file: {pems.client_cert} holds no private key;"
        " set session.redis.tls.key_file"
    )


def test_key_file_without_certificate_file(pems: Pems) -> None:
    """key_file alone cannot be used."""
    assert rule_problems(TLSConfig(key_file=pems.client_key)) == (
        "session.redis.tls.certificate_file: is required with key_file",
    )


# --- connection kwargs and the connection class ----------------------------------------------


def test_kwargs_use_server_name() -> None:
    """server_name is what the connection sends as SNI and checks."""
    kwargs = tls_connection_kwargs(TLSConfig(server_name=NAME), "127.0.0.1")
    assert kwargs["connection_class"] is TLSConnection
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["server_hostname"] == NAME


def test_kwargs_default_server_name_is_host() -> None:
    """Without server_name the host itself is checked."""
    assert tls_connection_kwargs(TLSConfig(), "redis.internal")["server_hostname"] == (
        "redis.internal"
    )


def test_kwargs_strip_ipv6_brackets() -> None:
    """A bracketed IPv6 host is checked as the bare address."""
    assert tls_connection_kwargs(TLSConfig(), "[fd00::1]")["server_hostname"] == "fd00::1"


def test_unix_socket_with_tls_is_refused() -> None:
    """TLS over a unix socket path is a config error."""
    assert rule_problems(TLSConfig(), host="/run/redis.sock") == (
        "session.redis.tls: cannot be used with a unix socket host",
    )


def test_connection_uses_our_context_and_name() -> None:
    """The socket is opened with our context and server name, and redis-py builds none."""
    ctx = build_ssl_context(TLSConfig(server_name=NAME))
    conn = TLSConnection(host="127.0.0.1", port=6380, ssl_context=ctx, server_hostname=NAME)
    args = conn._connection_arguments()
    assert args["ssl"] is ctx
    assert args["server_hostname"] == NAME
    assert (args["host"], args["port"]) == ("127.0.0.1", 6380)
    # redis-py's RedisSSLContext hands back our context instead of building a second one.
    assert conn.ssl_context.get() is ctx
    assert conn.check_hostname is True
    assert conn.cert_reqs == ssl.CERT_REQUIRED


def test_connection_repr_hides_password() -> None:
    """repr() shows address and server name, never the password."""
    ctx = build_ssl_context(TLSConfig(server_name=NAME))
    conn = TLSConnection(
        host="127.0.0.1",
        port=6380,
        ssl_context=ctx,
        server_hostname=NAME,
        username="app",
        password="hunter2-secret",
    )
    text = repr(conn)
    assert "hunter2-secret" not in text
    assert "server_hostname=myredis.example.com" in text
    assert "port=6380" in text


def test_connection_refuses_redis_py_ssl_options() -> None:
    """redis-py's ssl_* options would be ignored, so they are refused."""
    ctx = build_ssl_context(TLSConfig())
    with pytest.raises(TypeError, match="ssl_ca_certs"):
        TLSConnection(ssl_context=ctx, ssl_ca_certs="/etc/ca.pem")


# --- describe_tls_error ----------------------------------------------------------------------


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message} (_ssl.c:1006)"
    )
    exc.verify_code = code
    exc.verify_message = message
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    return exc


def ssl_error(reason: str, text: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {text} (_ssl.c:1006)")
    exc.reason = reason
    exc.library = "SSL"
    return exc


def wrapped(inner: BaseException, message: str | None = None) -> redis.exceptions.ConnectionError:
    """Wrap like redis-py's connect_check_health: a new error raised while handling ``inner``."""
    try:
        try:
            raise inner
        except OSError as exc:
            text = message or f"Error {exc.args[0]} connecting to {NODE}. {exc.args[-1]}."
            raise redis.exceptions.ConnectionError(text)  # noqa: B904 - exactly what redis-py does
    except redis.exceptions.ConnectionError as outer:
        return outer
    raise AssertionError  # pragma: no cover


def describe(exc: BaseException) -> str | None:
    return describe_tls_error(exc, node=NODE, server_name=NAME)


def test_hostname_mismatch() -> None:
    """A host name mismatch names the node, the name and server_name."""
    exc = wrapped(verify_error(62, "Hostname mismatch, certificate is not valid for 'x.example'."))
    text = describe(exc)
    assert text == (
        "TLS connection to Redis at 127.0.0.1:6380 failed: host name mismatch, the server's"
        " certificate is not valid for the name 'x.example'; set session.redis.tls.server_name"
        " to a name the certificate was issued for"
    )


def test_ip_address_mismatch() -> None:
    """Connecting by address without server_name is explained as an address mismatch."""
    exc = verify_error(64, "IP address mismatch, certificate is not valid for '127.0.0.1'.")
    text = describe_tls_error(wrapped(exc), node=NODE, server_name=None)
    assert text is not None
    assert "not valid for the address '127.0.0.1'" in text
    assert "session.redis.tls.server_name" in text


def test_untrusted_ca() -> None:
    """An unknown CA says 'not trusted' and points at ca_file and skip_verify."""
    text = describe(wrapped(verify_error(19, "self-signed certificate in certificate chain")))
    assert text is not None
    assert text.startswith(f"TLS connection to Redis at {NODE} failed: the server's certificate")
    assert "not trusted (self-signed certificate in certificate chain)" in text
    assert "session.redis.tls.ca_file" in text
    assert "session.redis.tls.skip_verify" in text


def test_expired_certificate() -> None:
    """An expired certificate is explained as such."""
    text = describe(verify_error(10, "certificate has expired"))
    assert text is not None
    assert "out of its validity period (certificate has expired)" in text


@pytest.mark.parametrize(
    "reason", ["TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"]
)
def test_protocol_version(reason: str) -> None:
    """No shared TLS version points at minimum_version."""
    text = describe(wrapped(ssl_error(reason, reason.lower().replace("_", " "))))
    assert text is not None
    assert "protocol version mismatch" in text
    assert "session.redis.tls.minimum_version" in text
    assert NODE in text


@pytest.mark.parametrize("reason", ["WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"])
def test_plaintext_peer(reason: str) -> None:
    """A peer that does not answer in TLS is probably a plaintext port."""
    text = describe(wrapped(ssl_error(reason, reason.lower().replace("_", " "))))
    assert text is not None
    assert "did not answer in TLS" in text
    assert "plaintext port" in text


def test_record_layer_failure_in_text_only() -> None:
    """OpenSSL 3.2's '[SSL] record layer failure' wording is recognised from text alone."""
    exc = StoreUnavailable(
        f"Error 1 connecting to {NODE}. [SSL] record layer failure (_ssl.c:1000)."
    )
    text = describe(exc)
    assert text is not None
    assert "did not answer in TLS" in text


def test_eof_during_handshake() -> None:
    """An SSL EOF is the server hanging up in the handshake."""
    exc = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation")
    text = describe(wrapped(exc))
    assert text is not None
    assert "closed the connection during the TLS handshake" in text


def test_reset_while_connecting_is_handshake_eof() -> None:
    """asyncio's bare ConnectionResetError during connect is the server hanging up."""
    exc = wrapped(ConnectionResetError(), message=f"Error connecting to {NODE}.")
    text = describe(exc)
    assert text is not None
    assert "closed the connection during the TLS handshake" in text


def test_reset_while_reading_is_not_tls() -> None:
    """A reset while reading a reply is not a TLS problem."""
    exc = wrapped(
        ConnectionResetError(104, "Connection reset by peer"),
        message=f"Error while reading from {NODE} : (104, 'Connection reset by peer')",
    )
    assert describe(exc) is None


def test_client_certificate_required() -> None:
    """TLS 1.3's certificate_required alert asks for certificate_file and key_file."""
    exc = ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED", "tlsv13 alert certificate required")
    text = describe(redis.exceptions.ConnectionError(f"Error 1 while writing to socket. {exc}"))
    assert text is not None
    assert "requires a client certificate" in text
    assert "session.redis.tls.certificate_file" in text


def test_closed_right_after_handshake() -> None:
    """TLSConnection's marker for a hang-up after the handshake points at client certificates."""
    inner = redis.exceptions.ConnectionError("Error 104 while writing to socket. Reset.")
    try:
        raise ClosedAfterHandshakeError(f"Error connecting to {NODE}: x") from inner
    except ClosedAfterHandshakeError as exc:
        text = describe(exc)
    assert text == (
        f"TLS connection to Redis at {NODE} failed: the server closed the TLS connection right"
        " after the handshake, without a word; it most likely requires a client certificate it"
        " trusts: set session.redis.tls.certificate_file and session.redis.tls.key_file, signed"
        " by a CA the server accepts"
    )


def test_closed_right_after_handshake_text_only() -> None:
    """The same hang-up is recognised from text once the chain is gone."""
    exc = StoreUnavailable(
        f"Error connecting to {NODE}: the server closed the TLS connection right after the"
        " handshake (Error 104 while writing to socket. Connection reset by peer.)"
    )
    text = describe(exc)
    assert text is not None
    assert "requires a client certificate" in text


def test_client_certificate_rejected() -> None:
    """The server's unknown_ca alert means our client certificate was refused."""
    text = describe(wrapped(ssl_error("TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca")))
    assert text is not None
    assert "rejected the client certificate" in text


def test_cause_hidden_by_from_none_is_still_found() -> None:
    """``raise StoreUnavailable(...) from None`` keeps __context__, which is followed."""
    inner = wrapped(verify_error(62, "Hostname mismatch, certificate is not valid for 'a.b'."))
    try:
        try:
            raise inner
        except redis.exceptions.ConnectionError:
            raise StoreUnavailable("Redis at 127.0.0.1:6380 is unavailable") from None
    except StoreUnavailable as outer:
        text = describe(outer)
    assert text is not None
    assert "host name mismatch" in text


def test_text_only_verify_failure() -> None:
    """With the chain gone, redis-py's message text is enough."""
    exc = StoreUnavailable(
        f"Error 1 connecting to {NODE}. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"
        " failed: Hostname mismatch, certificate is not valid for 'other.example.com'."
        " (_ssl.c:1006)."
    )
    text = describe(exc)
    assert text is not None
    assert "not valid for the name 'other.example.com'" in text


def test_exception_group_member_is_found() -> None:
    """A TLS error inside an exception group (task group) is found."""
    group = ExceptionGroup(
        "boom", [ValueError("x"), wrapped(ssl_error("WRONG_VERSION_NUMBER", "w"))]
    )
    text = describe(group)
    assert text is not None
    assert "did not answer in TLS" in text


def test_other_ssl_error_is_reported_in_openssl_words() -> None:
    """An ssl error we have no sentence for is still reported as a TLS failure."""
    text = describe(wrapped(ssl_error("SOMETHING_NEW", "something new")))
    assert text == f"TLS connection to Redis at {NODE} failed: [SSL: SOMETHING_NEW] something new"


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError(
            "Error 111 connecting to 127.0.0.1:6380. Connection refused."
        ),
        redis.exceptions.TimeoutError("Timeout connecting to server"),
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        ValueError("nothing to do with TLS"),
    ],
)
def test_not_a_tls_problem(exc: BaseException) -> None:
    """Refused, timeouts, auth failures and other errors give None."""
    assert describe(exc) is None


def test_plain_port_is_found_in_text_alone() -> None:
    """A wrapper that kept only the text of our plain-port error is still described as such."""
    from redis_session._wire import PLAIN_PORT  # noqa: PLC0415 - the text under test

    error = StoreUnavailable(f"cannot connect to {NODE}: Error connecting to {NODE}: {PLAIN_PORT}")
    text = describe_tls_error(error, node=NODE, server_name=NAME)
    assert text is not None
    assert text.startswith(f"TLS connection to Redis at {NODE} failed: the TLS handshake got no")
    assert "(session.redis.tls is set)" in text
