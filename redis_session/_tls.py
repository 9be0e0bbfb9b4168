"""TLS to Redis: our own ``ssl.SSLContext``, SNI through redis-py, and readable TLS failures.

redis-py 8.1 builds its TLS context itself (``RedisSSLContext``) and cannot send a server name
that differs from the address it connects to. :class:`TLSConnection` takes a context built once
per store by :func:`build_ssl_context` plus a ``server_hostname``, so SNI and the certificate
check use ``session.redis.tls.server_name`` while the socket goes to ``redis.host``.
:func:`describe_tls_error` turns OpenSSL's error codes, as wrapped by redis-py, into one sentence
that names the node and the option to change.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import tempfile
import warnings
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ._config import TLSConfig
from ._errors import ConfigError
from ._wire import (
    CLOSED_AFTER_HANDSHAKE,
    OUR_MARKERS,
    ClosedAfterHandshakeError,
    PlainPortError,
    TLSConnection,
    causes,
    unbracket,
)

__all__ = [
    "build_ssl_context",
    "describe_tls_error",
    "tls_connection_kwargs",
]

_log = logging.getLogger("redis_session")

_OPT = "session.redis.tls"

# --------------------------------------------------------------------------- context


class _EncryptedKeyError(Exception):
    """Raised from the key password callback so OpenSSL never prompts on the terminal."""


def _refuse_key_password() -> str:
    # Without a callback OpenSSL asks for the pass phrase on the controlling terminal, which
    # would hang a server process; there is no key password option, so refuse instead.
    raise _EncryptedKeyError


def _check_readable(path: str, option: str) -> None:
    # OpenSSL's own "No such file" errors do not say which file; opening it first lets the
    # message name the option and the path.
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{_OPT}.{option}: cannot load {path}: {reason}"]) from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words, e.g. ``no certificate or crl found``."""
    # ``reason`` is only set on errors raised by the ssl module itself, not on hand-made ones.
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).lower().replace("_", " ")
    return _strip_ssl_noise(str(exc))


def _diagnose_cert_chain(cert_file: str, key_file: str | None) -> str:
    """Say which of the two mTLS files OpenSSL's catch-all ``PEM lib`` error is about."""
    with open(cert_file, "rb") as f:
        cert_data = f.read()
    try:
        x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        return f"{_OPT}.certificate_file: cannot load {cert_file}: no PEM certificate found"
    key_path = key_file or cert_file
    key_option = "key_file" if key_file else "certificate_file"
    with open(key_path, "rb") as f:
        key_data = f.read()
    try:
        serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        return f"{_OPT}.{key_option}: cannot load {key_path}: the private key is encrypted"
    except (ValueError, UnsupportedAlgorithm):
        if key_file is None:
            return f"{_OPT}.certificate_file: {cert_file} holds no private key; set {_OPT}.key_file"
        return f"{_OPT}.key_file: cannot load {key_path}: no usable PEM private key found"
    return f"{_OPT}.{key_option}: cannot load {key_path}: OpenSSL rejected the key"


def _load_inline_certificate(ctx: ssl.SSLContext, chain: str, key: str) -> None:
    """Load ``certificate_chain`` and ``private_key`` (PEM text) into ``ctx``.

    ``ssl`` reads a certificate and key from files only, so both are written to files in a
    fresh private directory (mode 0700, files 0600) and removed as soon as OpenSSL has read
    them, whatever happens. Messages never quote the PEM: the key is a secret.
    """
    directory = tempfile.mkdtemp(prefix="redis-session-tls-")
    try:
        paths = []
        for stem, text in (("chain", chain), ("key", key)):
            path = os.path.join(directory, f"{stem}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            paths.append(path)
        ctx.load_cert_chain(paths[0], paths[1], password=_refuse_key_password)
    except _EncryptedKeyError:
        msg = f"{_OPT}.private_key: the private key is encrypted; give it unencrypted"
        raise ConfigError([msg]) from None
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            msg = f"{_OPT}.private_key: is not the private key of {_OPT}.certificate_chain"
        else:
            msg = (
                f"{_OPT}.certificate_chain: OpenSSL could not load it with {_OPT}.private_key"
                f" ({_ssl_reason(exc)})"
            )
        raise ConfigError([msg]) from None
    except OSError as exc:
        msg = f"{_OPT}.certificate_chain: cannot write it for OpenSSL to read: {exc.strerror}"
        raise ConfigError([msg]) from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _load_client_certificate(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    if tls.certificate_chain is not None and tls.private_key is not None:
        _load_inline_certificate(ctx, tls.certificate_chain, tls.private_key.get_secret_value())
        return
    if tls.certificate_file is None:
        return
    _check_readable(tls.certificate_file, "certificate_file")
    if tls.key_file is not None:
        _check_readable(tls.key_file, "key_file")
    key_option = "key_file" if tls.key_file else "certificate_file"
    key_path = tls.key_file or tls.certificate_file
    try:
        ctx.load_cert_chain(tls.certificate_file, tls.key_file, password=_refuse_key_password)
    except _EncryptedKeyError:
        msg = (
            f"{_OPT}.{key_option}: cannot load {key_path}: the private key is encrypted;"
            " store it unencrypted with restricted file permissions"
        )
        raise ConfigError([msg]) from None
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            problem = (
                f"{_OPT}.{key_option}: {key_path} is not the private key of the certificate"
                f" in {tls.certificate_file}"
            )
        else:
            problem = _diagnose_cert_chain(tls.certificate_file, tls.key_file)
        raise ConfigError([problem]) from None
    except OSError as exc:
        # Files were readable a moment ago; report whatever changed rather than a raw error.
        msg = f"{_OPT}.certificate_file: cannot load {tls.certificate_file}: {exc.strerror}"
        raise ConfigError([msg]) from None


def _set_versions(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    minimum, maximum = tls.minimum_version, tls.maximum_version
    # Python deprecates TLS1.0/1.1 with a DeprecationWarning when they are set; Authelia's
    # configuration allows them, and an explicit choice in the config is not our code using a
    # deprecated API. (OpenSSL 3's default security level may still refuse them.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ctx.minimum_version = minimum
            if maximum is not None:
                ctx.maximum_version = maximum
        except ValueError as exc:
            raise ConfigError([f"{_OPT}.minimum_version: not supported here: {exc}"]) from None


def build_ssl_context(tls: TLSConfig, *, host: str | None = None) -> ssl.SSLContext:
    """Build the client ``ssl.SSLContext`` for ``session.redis.tls``; call once per store.

    Verification is on by default: the peer's certificate must chain to the system trust store
    (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are honoured) or to ``ca_file``, and must be valid
    for the name given as ``server_hostname`` when connecting (see
    :func:`tls_connection_kwargs`). ``skip_verify`` turns both checks off and logs a warning
    naming the server (``server_name``, else ``host``). ``certificate_file``/``key_file``, or
    ``certificate_chain``/``private_key`` given inline, add a client certificate for mutual TLS.

    Raises:
        ConfigError: a file cannot be read or parsed, or the key does not match the
            certificate. The message names the option and the path.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname=True
    try:
        # On Linux this is set_default_verify_paths(), which reads SSL_CERT_FILE/SSL_CERT_DIR.
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, OSError) as exc:
        reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else exc.strerror
        msg = f"{_OPT}: cannot load the system trust store (SSL_CERT_FILE/SSL_CERT_DIR): {reason}"
        raise ConfigError([msg]) from None

    if tls.ca_file is not None:
        _check_readable(tls.ca_file, "ca_file")
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except ssl.SSLError as exc:
            msg = f"{_OPT}.ca_file: cannot load {tls.ca_file}: {_ssl_reason(exc)}"
            raise ConfigError([msg]) from None
        except OSError as exc:
            msg = f"{_OPT}.ca_file: cannot load {tls.ca_file}: {exc.strerror}"
            raise ConfigError([msg]) from None

    _set_versions(ctx, tls)
    _load_client_certificate(ctx, tls)

    if tls.skip_verify:
        # check_hostname must go first: OpenSSL refuses CERT_NONE while it is on.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        server = tls.server_name or host or "(unknown)"
        _log.warning(
            "TLS certificate and host name verification is OFF for Redis server %s"
            " (%s.skip_verify is true): the connection is encrypted but the server is not"
            " authenticated; use this for testing only",
            server,
            _OPT,
        )
    return ctx


def tls_connection_kwargs(tls: TLSConfig, host: str) -> dict[str, Any]:
    """Return the ``ConnectionPool`` keyword arguments for TLS to ``host``.

    ``connection_class`` is :class:`TLSConnection`, ``ssl_context`` a fresh
    :func:`build_ssl_context` (build the pool once and reuse it), and ``server_hostname`` is
    ``tls.server_name`` or else ``host`` without the brackets of an IPv6 literal.
    The pool's own ``host`` argument must be unbracketed too; that is the caller's job.

    Raises:
        ConfigError: as :func:`build_ssl_context`.
    """
    server_hostname = unbracket(tls.server_name or host)
    return {
        "connection_class": TLSConnection,
        "ssl_context": build_ssl_context(tls, host=server_hostname),
        "server_hostname": server_hostname,
    }


# --------------------------------------------------------------------------- errors

_SSL_NOISE = re.compile(r"\s*\(_ssl\.c:\d+\)")
_REASON_IN_TEXT = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")
_VERIFY_IN_TEXT = re.compile(r"certificate verify failed: (.+?)\s*(?:\(_ssl\.c:\d+\)|$)")
_NAME_IN_VERIFY = re.compile(r"not valid for '([^']*)'")

# X509_V_ERR_* codes (openssl/x509_vfy.h), grouped by what the user has to change.
_MISMATCH_CODES = frozenset({62, 63, 64})  # host name, email, IP address mismatch
_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21, 27})  # chain does not end at a trusted CA
_EXPIRED_CODES = frozenset({9, 10})  # not yet valid, expired
_UNTRUSTED_WORDS = ("self-signed", "self signed", "issuer certificate", "verify the first")

# OpenSSL reason codes -> kind of problem. A peer that does not speak TLS answers with bytes
# OpenSSL reads as a bad record header: OpenSSL 3.0 says WRONG_VERSION_NUMBER, 3.2+ says
# RECORD_LAYER_FAILURE ("record layer failure").
_REASON_KINDS = {
    reason: kind
    for kind, reasons in {
        "version": "TLSV1_ALERT_PROTOCOL_VERSION UNSUPPORTED_PROTOCOL NO_PROTOCOLS_AVAILABLE"
        " VERSION_TOO_LOW VERSION_TOO_HIGH UNKNOWN_PROTOCOL",
        "plaintext": "WRONG_VERSION_NUMBER RECORD_LAYER_FAILURE HTTP_REQUEST"
        " PACKET_LENGTH_TOO_LONG",
        "cert_required": "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "client_cert": "TLSV1_ALERT_UNKNOWN_CA SSLV3_ALERT_BAD_CERTIFICATE"
        " SSLV3_ALERT_CERTIFICATE_UNKNOWN SSLV3_ALERT_CERTIFICATE_EXPIRED"
        " SSLV3_ALERT_UNSUPPORTED_CERTIFICATE SSLV3_ALERT_CERTIFICATE_REVOKED"
        " TLSV1_ALERT_ACCESS_DENIED TLSV1_ALERT_DECRYPT_ERROR",
        "handshake": "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "eof": "UNEXPECTED_EOF_WHILE_READING EOF_OCCURRED_IN_VIOLATION_OF_PROTOCOL",
    }.items()
    for reason in reasons.split()
}

_WHERE = "TLS connection to Redis at {node} failed: "
_TEMPLATES = {
    "mismatch": _WHERE + "host name mismatch, the server's certificate is not valid for the"
    " {kind} {name!r}; set {opt}.server_name to a name the certificate was issued for",
    "untrusted": _WHERE + "the server's certificate is not trusted ({detail}); add its CA to"
    " {opt}.ca_file or the system trust store (SSL_CERT_FILE), or set {opt}.skip_verify for"
    " testing only",
    "expired": _WHERE + "the server's certificate is out of its validity period ({detail});"
    " renew it or check the clocks ({opt}.skip_verify bypasses this, for testing only)",
    "verify": _WHERE + "certificate verify failed ({detail}); fix the server's certificate or"
    " {opt}.ca_file ({opt}.skip_verify bypasses this, for testing only)",
    "version": _WHERE + "protocol version mismatch, the server accepts no TLS version allowed"
    " by {opt}.minimum_version/maximum_version ({detail})",
    "plaintext": _WHERE + "the server did not answer in TLS ({detail}); {node} is probably a"
    " plaintext port rather than Redis's tls-port, or it shares no TLS version with"
    " {opt}.minimum_version",
    "cert_required": _WHERE + "the server requires a client certificate ({detail}); set"
    " {opt}.certificate_file and {opt}.key_file",
    "client_cert": _WHERE + "the server rejected the client certificate ({detail}); check"
    " {opt}.certificate_file and {opt}.key_file",
    "handshake": _WHERE + "the server refused the TLS handshake ({detail}); it may require a"
    " client certificate ({opt}.certificate_file) or share no cipher or version with"
    " {opt}.minimum_version",
    "eof": _WHERE + "the server closed the connection during the TLS handshake; check that"
    " {node} is Redis's tls-port, that {opt}.minimum_version allows a version it speaks, and"
    " whether it needs a client certificate ({opt}.certificate_file)",
    "plain_port": _WHERE + "the TLS handshake got no answer, and {node} answers plain RESP"
    " instead: it is a plain TCP port, not Redis's tls-port ({opt} is set); use the server's"
    " tls-port, or remove {opt} if the server does not use TLS",
    "closed_after_handshake": _WHERE + CLOSED_AFTER_HANDSHAKE + ", without a word; it most"
    " likely requires a client certificate it trusts: set {opt}.certificate_file and"
    " {opt}.key_file, signed by a CA the server accepts",
    "other": _WHERE + "{detail}",
}


#: What was found: ``key`` picks the template in _TEMPLATES, the rest fills it in.
_Found = dict[str, str]


def _strip_ssl_noise(text: str) -> str:
    return _SSL_NOISE.sub("", text).strip()


def _classify_verify(code: int | None, message: str, server_name: str | None) -> _Found:
    lowered = message.lower()
    if code in _MISMATCH_CODES or "mismatch" in lowered:
        found = _NAME_IN_VERIFY.search(message)
        ip = code == 64 or lowered.startswith("ip address")
        return {
            "key": "mismatch",
            "kind": "address" if ip else "name",
            "name": found.group(1) if found else (server_name or "(unknown)"),
        }
    if code in _UNTRUSTED_CODES or any(w in lowered for w in _UNTRUSTED_WORDS):
        return {"key": "untrusted"}
    if code in _EXPIRED_CODES or "expired" in lowered or "not yet valid" in lowered:
        return {"key": "expired"}
    return {"key": "verify"}


def _from_attributes(chain: list[BaseException], server_name: str | None) -> _Found | None:
    # Structured attributes first; they are exact.
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = _strip_ssl_noise(str(e.verify_message or "")) or _strip_ssl_noise(str(e))
            return {**_classify_verify(e.verify_code, detail, server_name), "detail": detail}
    for e in chain:
        if isinstance(e, ssl.SSLError) and getattr(e, "reason", None) in _REASON_KINDS:
            return {"key": _REASON_KINDS[e.reason], "detail": _ssl_reason(e)}
    if any(isinstance(e, ClosedAfterHandshakeError) for e in chain):
        return {"key": "closed_after_handshake"}
    if any(isinstance(e, PlainPortError) for e in chain):
        return {"key": "plain_port"}
    if any(isinstance(e, ssl.SSLEOFError) for e in chain):
        return {"key": "eof"}
    return None


def _from_text(texts: list[str], server_name: str | None) -> _Found | None:
    # Only strings left, e.g. a wrapper built from str(ssl_error) with the chain dropped.
    for text in texts:
        verify = _VERIFY_IN_TEXT.search(text)
        if verify:
            detail = verify.group(1).rstrip(".")
            return {**_classify_verify(None, detail, server_name), "detail": detail}
        for reason in _REASON_IN_TEXT.findall(text):
            if reason in _REASON_KINDS:
                return {"key": _REASON_KINDS[reason], "detail": reason.lower().replace("_", " ")}
        for marker, key in OUR_MARKERS:
            if marker in text:
                return {"key": key}
        lowered = text.lower()
        if "record layer failure" in lowered:
            return {"key": "plaintext", "detail": "record layer failure"}
        if "eof occurred in violation of protocol" in lowered:
            return {"key": "eof"}
    return None


def _from_hang_up(chain: list[BaseException], texts: list[str]) -> _Found | None:
    # asyncio reports a peer that hangs up mid-handshake as a plain ConnectionResetError;
    # redis-py's "connecting to" wording places it in the connect phase (TCP + handshake), as
    # opposed to a reset while reading a reply.
    connecting = any(" connecting to " in t or t.startswith("Error connecting to") for t in texts)
    hung_up = any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in chain) or any(
        "reset by peer" in t.lower() for t in texts
    )
    return {"key": "eof"} if connecting and hung_up else None


def _classify(chain: list[BaseException], server_name: str | None) -> _Found | None:
    """Find the TLS problem in ``chain``: a template key plus the fields it needs."""
    texts = [str(e) for e in chain]
    found = (
        _from_attributes(chain, server_name)
        or _from_text(texts, server_name)
        or _from_hang_up(chain, texts)
    )
    if found is None:
        # Some other ssl error: still a TLS problem, so say it in OpenSSL's words.
        detail = next(
            (_strip_ssl_noise(str(e)) for e in chain if isinstance(e, ssl.SSLError)), None
        )
        found = None if detail is None else {"key": "other", "detail": detail}
    return found


def describe_tls_error(exc: BaseException, *, node: str, server_name: str | None) -> str | None:
    """Explain a failure on a TLS connection in one sentence, or return ``None``.

    ``exc`` may be the ssl error itself or any wrapper of it (redis-py's ``ConnectionError``,
    our ``StoreUnavailable``, an exception group): causes and contexts are followed, and the
    text of each is searched when the structured attributes are gone. The sentence names
    ``node`` (``"127.0.0.1:6380"``), what went wrong (host name mismatch, untrusted CA,
    protocol version, plaintext peer, client certificate, EOF during the handshake) and the
    ``session.redis.tls`` option to look at. ``None`` means no sign of a TLS problem.

    Call it only for connections that use TLS: a reset while connecting is read as the server
    hanging up in the handshake.
    """
    found = _classify(list(causes(exc)), server_name)
    if found is None:
        return None
    fields = {"detail": "", **found}
    return _TEMPLATES[fields.pop("key")].format(node=node, opt=_OPT, **fields)
