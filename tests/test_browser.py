"""Issue 11's acceptance in a real browser: headless Chromium against the example login app.

Debian's ``chromium`` (``.ci/ensure-chromium``), driven by Playwright's sync API, visits
``examples/login_app.py`` served by uvicorn over HTTPS at real host names under
``example.test`` (see ``tests/browser.py``). What is checked is what the browser itself keeps
and sends: the cookie jar (``context.cookies()``) and the pages it renders.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from examples.login_app import create_app
from redis_session import Session, SessionStore, open_session_store

from .browser import (
    ACTION_TIMEOUT_MS,
    DOMAIN,
    OTHER_DOMAIN,
    AppFactory,
    AppServer,
    SiteCert,
    chromium_executable,
    just,
    launched_chromium,
    make_site_cert,
    wait_until_clock,
)
from .servers import RedisProcess
from .store_helpers import SECRET

if TYPE_CHECKING:
    from playwright._impl._api_structures import SetCookieParam
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Cookie,
        Page,
        Response,
    )


@pytest.fixture(scope="module")
def site_cert(tmp_path_factory: pytest.TempPathFactory) -> SiteCert:
    """One certificate for the test domains and their subdomains, shared by the module."""
    return make_site_cert(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def browser(site_cert: SiteCert) -> Iterator[Browser]:
    """One headless Chromium for the module; each test gets a fresh context (cookie jar)."""
    with launched_chromium(site_cert) as (_, chromium):
        yield chromium


@pytest.fixture
def context(browser: Browser, sites: Sites) -> Iterator[BrowserContext]:
    """A fresh browser profile: empty cookie jar, nothing cached.

    It depends on ``sites`` so it is closed before the servers stop (a connection the browser
    keeps alive would hold uvicorn's graceful shutdown).
    """
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
def echo_server(sites: Sites) -> AppServer:
    """The raw cookie-echo app over HTTPS."""
    return sites.serve(just(_cookie_echo))


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


# --- the example login app -------------------------------------------------------------------

#: The cookie the config names for the test domain (``session.cookies[0]``).
COOKIE = "browser_session"
#: The cookie of the second entry (``session.cookies[1]``, for shop.test).
OTHER_COOKIE = "shop_session"
#: Short clocks: idle sessions end quickly, absolute ones last long enough to tell apart.
INACTIVITY_S = 2
EXPIRATION_S = 3600
REMEMBER_ME_S = 86400
#: How far the cookie's expiry may sit from the server's clock + the session's lifetime: the
#: stamp is taken around the login request, and nothing here asserts on speed.
EXPIRY_SLACK_S = 120
#: How long the app may take to notice Redis is back (its reconnect back-off).
RECOVERY_TIMEOUT_S = 30


def _config(kind: str, proc: RedisProcess | None, **overrides: Any) -> dict[str, Any]:
    """The app's ``session`` section: a cookie entry for example.test, short clocks."""
    cfg: dict[str, Any] = {
        "secret": SECRET,
        "same_site": "lax",
        "expiration": EXPIRATION_S,
        "inactivity": INACTIVITY_S,
        "remember_me": REMEMBER_ME_S,
        # SameSite from the entry (strict) over the top-level default (lax): the browser
        # must store what the entry says.
        "cookies": [
            {
                "domain": DOMAIN,
                "name": COOKIE,
                "same_site": "strict",
                "authelia_url": f"https://auth.{DOMAIN}",
            },
            # A second site, its cookie named by the entry, SameSite from the top level (lax).
            {"domain": OTHER_DOMAIN, "name": OTHER_COOKIE},
        ],
    }
    if kind == "redis":
        assert proc is not None
        # A short timeout: the Redis-down test waits at most this long for its 503.
        cfg["redis"] = proc.redis_section(timeout="2s")
    cfg.update(overrides)
    return cfg


@attrs.define(eq=False)
class Site:
    """The example app served over HTTPS, and what a test needs to reach behind it."""

    server: AppServer
    kind: str
    #: The store the app uses, open on the server's loop (``None``: the app opened its own).
    store: SessionStore[Any] | None
    #: The store's clock in unix seconds: the Redis server's TIME, or this process's clock.
    clock: Callable[[], float]

    def url(self, path: str = "/", host: str = f"app.{DOMAIN}") -> str:
        """An address on the app, at ``host`` (any name under example.test)."""
        return self.server.url(host, path)

    def load(self, session_id: str) -> Session[Any] | None:
        """``store.load`` through the app's own store (on the server's loop)."""
        store = self.store
        assert store is not None
        return self.server.call(lambda: store.load(session_id))

    def delete(self, session_id: str) -> None:
        """``store.delete`` through the app's own store: a revocation the app did not see."""
        store = self.store
        assert store is not None
        self.server.call(lambda: store.delete(session_id))


def _server_clock(proc: RedisProcess | None) -> Callable[[], float]:
    if proc is None:
        return time.time  # the in-memory provider's clock is this process's wall clock

    def redis_time() -> float:
        seconds, micros = proc.admin().time()
        return float(seconds) + micros / 1e6

    return redis_time


class Sites:
    """Starts the example app (or any ASGI app) over HTTPS; stops them all after the test."""

    def __init__(self, cert: SiteCert) -> None:
        self.cert = cert
        self._servers: list[AppServer] = []

    def serve(self, factory: AppFactory) -> AppServer:
        """Serve ``factory``'s app until the end of the test."""
        server = AppServer(factory, self.cert)
        server.start()
        self._servers.append(server)
        return server

    def login_app(
        self, kind: str, proc: RedisProcess | None, *, own_store: bool = True, **overrides: Any
    ) -> Site:
        """``examples/login_app.py``'s app on the memory or Redis provider.

        ``own_store``: the test opens the store and hands the app the open store, so it can
        reach the very sessions the app keeps (a memory store lives in one object); otherwise
        the app gets the config mapping and opens (and reopens) its store itself.
        """
        cfg = _config(kind, proc, **overrides)
        holder: list[SessionStore[Any]] = []

        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[Any]:
            if not own_store:
                yield create_app(cfg)
                return
            async with open_session_store(cfg) as store:
                holder.append(store)
                # create_app hands cfg to SessionMiddleware, which takes an open store too
                # (DESIGN.md); create_app's annotation does not say so yet.
                yield create_app(store)

        server = self.serve(factory)
        return Site(server, kind, holder[0] if holder else None, _server_clock(proc))

    def close(self) -> None:
        """Stop every server, newest first."""
        while self._servers:
            self._servers.pop().stop()


@pytest.fixture
def sites(site_cert: SiteCert) -> Iterator[Sites]:
    """Start apps with ``sites.serve(...)`` / ``sites.login_app(...)``; all stop after the test."""
    started = Sites(site_cert)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which provider the app's store uses: in memory, or the shared (flushed) redis-server."""
    return str(request.param)


@pytest.fixture
def site(kind: str, sites: Sites, request: pytest.FixtureRequest) -> Site:
    """The example app on ``kind``'s provider, with a store the test can reach."""
    proc = request.getfixturevalue("redis") if kind == "redis" else None
    return sites.login_app(kind, proc)


# -- what the browser shows and keeps --


def _text(page: Page, element_id: str) -> str:
    return page.inner_text(f"#{element_id}").strip()


def _show(page: Page, site: Site, host: str = f"app.{DOMAIN}") -> Response:
    """GET / and return the response (the page is then rendered)."""
    response = page.goto(site.url("/", host))
    assert response is not None
    return response


def _login(
    page: Page,
    site: Site,
    username: str,
    *,
    remember_me: bool = False,
    host: str = f"app.{DOMAIN}",
) -> float:
    """Log in through the form; return the store's clock (seconds) just before submitting."""
    page.goto(site.url("/login", host))
    page.fill("#username", username)
    if remember_me:
        page.check("#remember_me")
    before = site.clock()
    with page.expect_navigation(url=site.url("/", host)):
        page.click("#login-submit")
    return before


def _click(page: Page, site: Site, button_id: str, host: str = f"app.{DOMAIN}") -> None:
    """Submit one of the page's forms (on ``host``) and wait for the redirect back to /."""
    with page.expect_navigation(url=site.url("/", host)):
        page.click(f"#{button_id}")


def _session_cookie(context: BrowserContext, name: str = COOKIE) -> Cookie | None:
    """The session cookie ``name`` in the browser's jar, if any (never more than one)."""
    found = [c for c in context.cookies() if c["name"] == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def _planted(value: str) -> SetCookieParam:
    """A session cookie put in the jar by hand, as the app would have set it."""
    return {
        "name": COOKIE,
        "value": value,
        "domain": f".{DOMAIN}",
        "path": "/",
        "secure": True,
        "httpOnly": True,
        "sameSite": "Strict",
    }


@pytest.mark.parametrize("remember_me", [False, True], ids=["plain", "remember_me"])
def test_login_stores_the_configured_cookie(
    site: Site, context: BrowserContext, remember_me: bool
) -> None:
    """Logging in stores the cookie the config describes, expiring with the session's lifetime.

    Name and ``Domain`` from the ``cookies`` entry for example.test (so a sibling host gets
    it too), ``Path=/``, ``HttpOnly``, ``Secure``, the entry's ``SameSite``; it expires with
    the absolute clock: ``expiration``, or ``remember_me`` for a remember-me login.
    """
    page = context.new_page()
    _show(page, site)
    assert _text(page, "state") == "anonymous"
    assert _session_cookie(context) is None, "an anonymous visit must not set a cookie"

    before = _login(page, site, "alice", remember_me=remember_me)
    assert _text(page, "state") == "logged in as alice"
    assert _text(page, "remember") == ("yes" if remember_me else "no")

    cookie = _session_cookie(context)
    assert cookie is not None
    assert cookie["domain"] == f".{DOMAIN}"
    assert cookie["path"] == "/"
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    lifetime = REMEMBER_ME_S if remember_me else EXPIRATION_S
    assert cookie["expires"] == pytest.approx(before + lifetime, abs=EXPIRY_SLACK_S)
    session = site.load(cookie["value"])
    assert session is not None
    assert session.remember_me is remember_me
    assert cookie["expires"] == pytest.approx(session.expires_at.timestamp(), abs=2)

    # Domain=example.test: another host under it is sent the cookie, and sees the session.
    _show(page, site, host=f"other.{DOMAIN}")
    assert _text(page, "state") == "logged in as alice"


def test_each_cookie_entry_serves_its_own_domain(site: Site, context: BrowserContext) -> None:
    """One app, two ``cookies`` entries: a host under each gets that entry's cookie (name,
    Domain, SameSite), and the two sessions are independent of each other."""
    page = context.new_page()
    _login(page, site, "ivan")
    shop = f"www.{OTHER_DOMAIN}"
    _show(page, site, host=shop)
    assert _text(page, "state") == "anonymous", "the example.test cookie must not reach shop.test"
    _login(page, site, "judy", host=shop)
    assert _text(page, "state") == "logged in as judy"

    cookie = _session_cookie(context, OTHER_COOKIE)
    assert cookie is not None
    assert cookie["domain"] == f".{OTHER_DOMAIN}"
    assert (cookie["path"], cookie["httpOnly"], cookie["secure"]) == ("/", True, True)
    assert cookie["sameSite"] == "Lax"
    _show(page, site, host=f"pay.{OTHER_DOMAIN}")
    assert _text(page, "state") == "logged in as judy"
    _show(page, site)
    assert _text(page, "state") == "logged in as ivan"


def test_example_app_with_no_config_keeps_a_host_only_cookie(
    sites: Sites, context: BrowserContext
) -> None:
    """``create_app()`` with no config (sessions in memory, no ``cookies`` entry): the cookie is
    host-only, named ``session.name``, ``SameSite=Lax``, and lasts the default hour."""
    site = Site(sites.serve(just(create_app())), "memory", None, time.time)
    page = context.new_page()
    before = _login(page, site, "kim")
    assert _text(page, "state") == "logged in as kim"
    cookie = _session_cookie(context, "authelia_session")
    assert cookie is not None
    assert cookie["domain"] == f"app.{DOMAIN}"  # no leading dot: host-only
    assert (cookie["path"], cookie["httpOnly"], cookie["secure"]) == ("/", True, True)
    assert cookie["sameSite"] == "Lax"
    assert cookie["expires"] == pytest.approx(before + 3600, abs=EXPIRY_SLACK_S)
    _show(page, site, host=f"other.{DOMAIN}")
    assert _text(page, "state") == "anonymous", "a host-only cookie stays on its host"


def test_inactivity_ends_a_plain_session_not_a_remember_me_one(
    site: Site, context: BrowserContext, browser: Browser
) -> None:
    """Left idle past ``inactivity``, a plain session is gone (cookie cleared), a remember-me
    session is not: it only ends at its absolute deadline."""
    plain = context.new_page()
    _login(plain, site, "plain-user")
    assert _text(plain, "state") == "logged in as plain-user"
    remembered_context = browser.new_context()
    try:
        remembered = remembered_context.new_page()
        _login(remembered, site, "remembered-user", remember_me=True)
        assert _text(remembered, "state") == "logged in as remembered-user"
        kept = _session_cookie(remembered_context)
        assert _session_cookie(context) is not None
        assert kept is not None

        # Both were last used before this instant; wait, by the store's own clock, until the
        # plain one has been idle longer than the limit.
        wait_until_clock(site.clock, site.clock() + INACTIVITY_S + 0.5)

        _show(plain, site)
        assert _text(plain, "state") == "anonymous"
        assert _session_cookie(context) is None, "an idle-expired cookie must be cleared"
        _show(remembered, site)
        assert _text(remembered, "state") == "logged in as remembered-user"
        assert _session_cookie(remembered_context) == kept
    finally:
        remembered_context.close()


def test_counter_is_kept_in_the_session(site: Site, context: BrowserContext) -> None:
    """Each POST /count increments the count the session keeps; other hosts see it too."""
    page = context.new_page()
    _login(page, site, "carol", remember_me=True)
    assert _text(page, "count") == "0"
    for expected in ("1", "2", "3"):
        _click(page, site, "count-submit")
        assert _text(page, "count") == expected
    _show(page, site, host=f"other.{DOMAIN}")
    assert _text(page, "count") == "3"
    # Kept by the store, not just shown: the session's data holds the count.
    cookie = _session_cookie(context)
    assert cookie is not None
    session = site.load(cookie["value"])
    assert session is not None
    assert 3 in session.data.values()


def test_logout_clears_the_cookie_and_ends_the_session(site: Site, context: BrowserContext) -> None:
    """Logging out shows the anonymous page, removes the cookie, and the old id is dead.

    Logged in on one host and out on a sibling: the clearing cookie must carry the same
    ``Domain`` for the browser to drop the one it holds. Putting the old cookie back (a copy an
    attacker kept) does not bring the session back.
    """
    page = context.new_page()
    _login(page, site, "dave", remember_me=True)
    cookie = _session_cookie(context)
    assert cookie is not None

    sibling = f"other.{DOMAIN}"
    _show(page, site, host=sibling)
    _click(page, site, "logout-submit", host=sibling)
    assert _text(page, "state") == "anonymous"
    assert _session_cookie(context) is None
    assert site.load(cookie["value"]) is None

    context.add_cookies([_planted(cookie["value"])])
    _show(page, site)
    assert _text(page, "state") == "anonymous"
    assert _session_cookie(context) is None, "a dead cookie must be cleared"


def test_revoked_session_is_cleared_from_the_browser(site: Site, context: BrowserContext) -> None:
    """A session deleted behind the app's back: the next page is anonymous, the cookie cleared."""
    page = context.new_page()
    _login(page, site, "erin", remember_me=True)
    cookie = _session_cookie(context)
    assert cookie is not None

    site.delete(cookie["value"])

    _show(page, site)
    assert _text(page, "state") == "anonymous"
    assert _session_cookie(context) is None


def test_client_chosen_id_is_never_used(site: Site, context: BrowserContext) -> None:
    """A cookie the browser was given by someone else (fixation) is cleared, and logging in
    issues a fresh id instead of adopting it."""
    planted = "A" * 43  # shaped like a real id
    context.add_cookies([_planted(planted)])
    page = context.new_page()
    _show(page, site)
    assert _text(page, "state") == "anonymous"
    assert _session_cookie(context) is None

    context.add_cookies([_planted(planted)])
    _login(page, site, "frank")
    cookie = _session_cookie(context)
    assert cookie is not None
    assert cookie["value"] != planted
    assert site.load(planted) is None


def test_login_again_with_remember_me_switches_to_a_new_id(
    site: Site, context: BrowserContext
) -> None:
    """Logging in again with remember-me replaces the id and the expiry; the old id is dead."""
    page = context.new_page()
    _login(page, site, "grace")
    first = _session_cookie(context)
    assert first is not None
    before = _login(page, site, "grace", remember_me=True)
    assert _text(page, "remember") == "yes"
    second = _session_cookie(context)
    assert second is not None
    assert second["value"] != first["value"]
    assert second["expires"] == pytest.approx(before + REMEMBER_ME_S, abs=EXPIRY_SLACK_S)
    assert site.load(first["value"]) is None


@pytest.mark.parametrize("own_store", [False, True], ids=["app_opens_store", "store_passed_in"])
def test_redis_down_answers_503_and_keeps_the_cookie(
    fresh_redis: RedisProcess, sites: Sites, context: BrowserContext, own_store: bool
) -> None:
    """With Redis stopped the page gets 503 and the browser keeps its cookie; once Redis is
    back, the same session works again (the app reconnects by itself).

    Both ways an app gets its store: from the config (the middleware opens it) or open.
    """
    site = sites.login_app("redis", fresh_redis, own_store=own_store)
    page = context.new_page()
    _login(page, site, "heidi", remember_me=True)
    _click(page, site, "count-submit")
    assert _text(page, "count") == "1"
    cookie = _session_cookie(context)
    assert cookie is not None

    # Written to disk first, so the restarted server has the session again (the harness's
    # servers do not persist by themselves).
    fresh_redis.admin().save()
    fresh_redis.stop()
    try:
        response = _show(page, site)
        assert response.status == 503
        assert _session_cookie(context) == cookie, "a store outage must never clear the cookie"
    finally:
        fresh_redis.restart()

    # The app heals by itself; how soon depends on its reconnect back-off, so the page is
    # reloaded until it answers (a generous bound: this is not a speed test).
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while (response := _show(page, site)).status == 503 and time.monotonic() < deadline:
        assert _session_cookie(context) == cookie
        time.sleep(0.2)
    assert response.status == 200
    assert _text(page, "state") == "logged in as heidi"
    assert _text(page, "count") == "1"
    assert _session_cookie(context) == cookie


def test_missing_chromium_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``chromium`` on PATH the browser tests fail, naming the command that fixes it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"bash \.ci/ensure-chromium"):
        chromium_executable()


def test_redis_not_answering_answers_503_and_keeps_the_cookie(
    fresh_redis: RedisProcess, sites: Sites, context: BrowserContext
) -> None:
    """A Redis that accepts but never answers (SIGSTOP): 503 once ``redis.timeout`` runs out,
    the cookie kept; answered again as soon as Redis resumes."""
    site = sites.login_app("redis", fresh_redis, own_store=False)
    page = context.new_page()
    _login(page, site, "leo", remember_me=True)
    cookie = _session_cookie(context)
    assert cookie is not None

    fresh_redis.pause()
    try:
        response = _show(page, site)
        assert response.status == 503
        assert _session_cookie(context) == cookie
    finally:
        fresh_redis.resume()

    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while (response := _show(page, site)).status == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert response.status == 200
    assert _text(page, "state") == "logged in as leo"
    assert _session_cookie(context) == cookie


def test_your_sessions_page_logs_out_everywhere_else(
    site: Site, context: BrowserContext, browser: Browser
) -> None:
    """Two devices of one user: the sessions page lists both with each one's user agent; "log
    out everywhere else" on one leaves it logged in and the other anonymous, its cookie gone."""
    phone = browser.new_context(user_agent="PhoneBrowser/1.0 (test)")
    phone.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        laptop_page = context.new_page()
        phone_page = phone.new_page()
        _login(laptop_page, site, "heidi", remember_me=True)
        _login(phone_page, site, "heidi")
        phone_cookie = _session_cookie(phone, COOKIE)
        assert phone_cookie is not None

        laptop_page.goto(site.url("/sessions"))
        assert _text(laptop_page, "session-count") == "2"
        rows = laptop_page.locator("#sessions tr.session")
        assert rows.count() == 2
        current = laptop_page.locator("#sessions tr.session.current")
        assert current.count() == 1
        assert "(this session)" in current.inner_text()
        assert "PhoneBrowser/1.0 (test)" in laptop_page.inner_text("#sessions")
        assert "PhoneBrowser" not in current.inner_text()
        assert phone_cookie["value"] not in laptop_page.content()

        with laptop_page.expect_navigation(url=site.url("/sessions")):
            laptop_page.click("#logout-others-submit")
        assert _text(laptop_page, "session-count") == "1"
        assert laptop_page.locator("#sessions tr.session.current").count() == 1

        _show(phone_page, site)
        assert _text(phone_page, "state") == "anonymous"
        assert _session_cookie(phone, COOKIE) is None
        _show(laptop_page, site)
        assert _text(laptop_page, "state") == "logged in as heidi"
    finally:
        phone.close()
