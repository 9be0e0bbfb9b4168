"""Issue 11's acceptance in a real browser: headless Chromium against the example login app.

Debian's ``chromium`` (``.ci/ensure-chromium``), driven by Playwright's sync API, visits
``examples/login_app.py`` served by uvicorn over HTTPS at real host names under
``example.test`` (see ``tests/browser.py``). What is checked is what the browser itself keeps
and sends: the cookie jar (``context.cookies()``) and the pages it renders.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .browser import (
    ACTION_TIMEOUT_MS,
    DOMAIN,
    AppServer,
    SiteCert,
    launched_chromium,
    make_site_cert,
    serving,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext


@pytest.fixture(scope="module")
def site_cert(tmp_path_factory: pytest.TempPathFactory) -> SiteCert:
    """One certificate for ``example.test`` and its subdomains, shared by the module."""
    return make_site_cert(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def browser(site_cert: SiteCert) -> Iterator[Browser]:
    """One headless Chromium for the module; each test gets a fresh context (cookie jar)."""
    with launched_chromium(site_cert) as (_, chromium):
        yield chromium


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: empty cookie jar, nothing cached."""
    ctx = browser.new_context()
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


# --- the harness itself ----------------------------------------------------------------------


async def _cookie_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app: echoes the Cookie header it got and sets a Secure domain cookie."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = dict(scope["headers"])
    body = b"cookie=" + headers.get(b"cookie", b"")
    cookie = f"probe=1; Domain={DOMAIN}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=600"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"set-cookie", cookie.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def echo_server(site_cert: SiteCert) -> Iterator[AppServer]:
    """The raw cookie-echo app over HTTPS."""
    with serving(_cookie_echo, site_cert) as server:
        yield server


def test_harness_secure_domain_cookie_reaches_sibling_host(
    echo_server: AppServer, context: BrowserContext
) -> None:
    """The browser stores a Secure cookie over the test HTTPS and sends it to a sibling host."""
    page = context.new_page()
    response = page.goto(echo_server.url(f"app.{DOMAIN}"))
    assert response is not None
    assert response.status == 200
    assert page.evaluate("window.isSecureContext") is True
    (cookie,) = context.cookies()
    assert cookie["name"] == "probe"
    assert cookie["domain"] == f".{DOMAIN}"
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    page.goto(echo_server.url(f"other.{DOMAIN}"))
    assert page.inner_text("body") == "cookie=probe=1"
