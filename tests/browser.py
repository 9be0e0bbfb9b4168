"""A real browser against a real server: headless Chromium, uvicorn over HTTPS, real host names.

The browser tests (``tests/test_browser.py``) need three things a plain ASGI client cannot give:

- **Real host names.** Cookie ``Domain`` matching (``Domain=example.test`` sent to
  ``app.example.test`` and ``other.example.test``, not to ``www.shop.test``) only happens when
  the browser believes it is talking to those hosts. Chromium's ``--host-resolver-rules`` maps
  ``example.test``, ``shop.test`` and every name under them to 127.0.0.1, so nothing ever
  leaves the loopback interface (``.test`` is reserved by RFC 2606: no real host answers for
  it).
- **HTTPS.** The session cookie is ``Secure``: a browser stores it only from an https origin.
  uvicorn serves a ``trustme`` certificate for those names (``*.example.test`` and so on), and
  Chromium trusts that certificate's key alone (``--ignore-certificate-errors-spki-list``), so
  the origin is a secure one, exactly as with a real CA, and no other certificate error is
  waved through.
- **A server in this process**, so a test can reach the app's store (to revoke a session) on
  the server's own event loop: :class:`AppServer` runs uvicorn on a thread of its own, with its
  own loop, listening on a socket bound to a free loopback port here (no port race).

Playwright drives Debian's ``chromium`` through ``executable_path``: Playwright's own browser
download cannot work on these machines. A missing browser or Playwright fails the tests with
the command that fixes it (:func:`chromium_executable`); it never skips them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import pytest
import trustme
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .servers import HOST, RESERVED_PORTS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

T = TypeVar("T")

#: The registrable domain the tests serve; every name under it resolves to 127.0.0.1.
DOMAIN = "example.test"
#: A second site of the same app (another ``session.cookies`` entry); resolves there too.
OTHER_DOMAIN = "shop.test"
#: Names the browser may visit: both domains and any subdomain of them.
CERT_NAMES = (DOMAIN, f"*.{DOMAIN}", OTHER_DOMAIN, f"*.{OTHER_DOMAIN}")
#: Chromium's resolver: these names and nothing else go to the loopback address.
HOST_RESOLVER_RULES = ", ".join(
    f"MAP {name} {HOST}" for name in (f"*.{DOMAIN}", DOMAIN, f"*.{OTHER_DOMAIN}", OTHER_DOMAIN)
)
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: How long one browser action may wait (a page load, a click) before Playwright gives up.
ACTION_TIMEOUT_MS = 20_000

_FIX_CHROMIUM = "run: bash .ci/ensure-chromium (installs Debian's chromium package)"


def chromium_executable() -> str:
    """Return the path of Debian's ``chromium``; fail the test (never skip) if it is missing."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            f"the browser tests need Chromium and `chromium` is not on PATH; {_FIX_CHROMIUM}"
        )
    return path


def import_playwright() -> Any:
    """Return ``playwright.sync_api.sync_playwright``; fail (never skip) if it is not installed."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - provisioning error, reported loudly
        pytest.fail(
            "the browser tests need Playwright for Python: install the tests dependency group "
            f"(pip install --group tests, or nox -s tests): {exc}"
        )
    return sync_playwright


# --- certificates -------------------------------------------------------------------------------


@attrs.frozen
class SiteCert:
    """A certificate for :data:`CERT_NAMES`: the server's files and the browser's pin."""

    #: PEM file with the private key and the certificate chain (uvicorn's ``ssl_certfile``).
    key_and_chain_file: Path
    #: base64 SHA-256 of the certificate's SubjectPublicKeyInfo, Chromium's pin format.
    spki_sha256: str


def make_site_cert(directory: Path) -> SiteCert:
    """Issue a certificate for :data:`CERT_NAMES` from a fresh test CA."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*CERT_NAMES)
    path = directory / "site.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
    return SiteCert(key_and_chain_file=path, spki_sha256=pin)


# --- the browser -------------------------------------------------------------------------------


def chromium_args(cert: SiteCert) -> list[str]:
    """Command-line switches: resolve the test domain to loopback, trust the site's key."""
    return [
        f"--host-resolver-rules={HOST_RESOLVER_RULES}",
        f"--ignore-certificate-errors-spki-list={cert.spki_sha256}",
    ]


@contextlib.contextmanager
def launched_chromium(cert: SiteCert) -> Iterator[tuple[Playwright, Browser]]:
    """Start Playwright and headless Debian Chromium; stop both on the way out."""
    executable = chromium_executable()
    sync_playwright = import_playwright()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=chromium_args(cert)
        )
        try:
            yield playwright, browser
        finally:
            browser.close()


# --- the server --------------------------------------------------------------------------------


def _listening_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (never one of the reserved Redis ports)."""
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, 0))
        except BaseException:
            sock.close()
            raise
        if sock.getsockname()[1] not in RESERVED_PORTS:
            return sock
        sock.close()  # pragma: no cover - the kernel handed out 6379 or 26379


#: What an :class:`AppServer` serves: an async context manager, entered on the server's own
#: event loop, that gives the ASGI app (so whatever the app needs from that loop, a store say,
#: is opened there first and closed there after the server stops).
AppFactory = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


def just(app: Any) -> AppFactory:
    """An :data:`AppFactory` for an app that needs nothing opened first."""

    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[Any]:
        yield app

    return factory


@attrs.define(eq=False)
class AppServer:
    """uvicorn serving one ASGI app over HTTPS on a thread (and event loop) of its own.

    ``start()`` returns once uvicorn accepts connections (its lifespan startup done); ``stop()``
    asks it to exit and joins the thread, raising if it does not. ``call(fn)`` runs a coroutine
    function on the server's loop, where the app's store lives. Stop the server after closing
    the browser contexts that visited it: a connection a browser keeps alive holds uvicorn's
    graceful shutdown until its timeout.
    """

    factory: AppFactory
    cert: SiteCert
    port: int = 0
    _server: uvicorn.Server | None = attrs.field(default=None, repr=False)
    _thread: threading.Thread | None = attrs.field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, repr=False)
    _error: BaseException | None = attrs.field(default=None, repr=False)

    def url(self, host: str = f"app.{DOMAIN}", path: str = "/") -> str:
        """``https://host:port/path`` on this server (any name under the test domain)."""
        return f"https://{host}:{self.port}{path}"

    def start(self) -> None:
        """Start serving; raise with uvicorn's (or the factory's) error if it cannot."""
        sock = _listening_socket()
        self.port = sock.getsockname()[1]

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            async with self.factory() as app:
                config = uvicorn.Config(
                    app,
                    ssl_certfile=str(self.cert.key_and_chain_file),
                    lifespan="on",
                    # Leave pytest's logging alone; HTTP/1.1 only.
                    log_config=None,
                    access_log=False,
                    ws="none",
                    timeout_graceful_shutdown=5,
                )
                self._server = uvicorn.Server(config)
                await self._server.serve(sockets=[sock])

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:  # reported by start() and stop()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while self._server is None or not self._server.started:
            if not self._thread.is_alive():
                self._thread = None
                msg = f"uvicorn on port {self.port} did not start"
                raise RuntimeError(msg) from self._error
            if time.monotonic() > deadline:
                self.stop()
                msg = f"uvicorn on port {self.port} not ready within {READY_TIMEOUT} s"
                raise RuntimeError(msg)
            time.sleep(0.01)

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``fn()`` on the server's event loop and return its result."""
        assert self._loop is not None, "the server is not running"

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self) -> None:
        """Ask uvicorn to exit (lifespan shutdown included) and wait for its thread."""
        server, thread = self._server, self._thread
        if thread is None:
            return
        if server is not None:
            server.should_exit = True
        thread.join(STOP_TIMEOUT)
        if thread.is_alive() and server is not None:
            server.force_exit = True
            thread.join(STOP_TIMEOUT)
        self._server = self._thread = self._loop = None
        if thread.is_alive():
            msg = f"uvicorn on port {self.port} did not stop within {2 * STOP_TIMEOUT} s"
            raise RuntimeError(msg)
        if self._error is not None and not isinstance(self._error, SystemExit):
            raise RuntimeError(f"uvicorn on port {self.port} failed") from self._error


@contextlib.contextmanager
def serving(factory: AppFactory, cert: SiteCert) -> Iterator[AppServer]:
    """Serve the app ``factory`` gives for the duration of the block."""
    server = AppServer(factory, cert)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- waiting by the session server's clock ------------------------------------------------------


def wait_until_clock(clock: Callable[[], float], deadline: float, poll: float = 0.05) -> None:
    """Sleep until ``clock()`` (seconds, the store's clock) reaches ``deadline``.

    Sessions expire by the store's clock (the Redis server's ``TIME``), so an idle period is
    measured on that clock, not this process's: however slow the machine, the wait ends only
    once the server agrees the time has passed.
    """
    while (remaining := deadline - clock()) > 0:
        time.sleep(min(poll, remaining))
