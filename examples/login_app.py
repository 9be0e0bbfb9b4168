"""A small login app on Starlette: log in (with remember-me), a counter, your sessions, log out.

Run it on the in-memory default, with no set-up::

    uvicorn examples.login_app:app

or on Redis, with a config file (Authelia's ``session:`` section)::

    LOGIN_APP_CONFIG=config.yml uvicorn examples.login_app:app
    python examples/login_app.py --config config.yml [--port 8000]

Then open http://127.0.0.1:8000/. ``/healthz`` is excluded from sessions (no Redis command).
``/sessions`` lists the logged-in user's sessions (docs/users.md) with "log out everywhere
else".
The pages are plain HTML with stable element ids (tests drive them, in a browser too).
"""

from __future__ import annotations

import argparse
import html
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from redis_session import SessionConfig, SessionStore
from redis_session.asgi import (
    SessionMiddleware,
    login,
    logout,
    session_public_id,
    session_store,
)

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>redis_session login demo</title></head>
<body>
{body}
</body></html>
"""


def _page(body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(body=body), headers={"cache-control": "no-store"})


def _see_other(path: str) -> RedirectResponse:
    # 303: the browser follows a POST's redirect with a GET.
    return RedirectResponse(path, status_code=303)


async def home(request: Request) -> Response:
    """Show who is logged in, the counter, and whether the session is a remember-me one."""
    session = request.session
    user = session.get("user")
    state = f"logged in as {html.escape(str(user))}" if user else "anonymous"
    return _page(
        f'<p id="state">{state}</p>\n'
        f'<p id="count">{int(session.get("count", 0))}</p>\n'
        f'<p id="remember">{"yes" if session.get("remember_me") else "no"}</p>\n'
        '<form method="post" action="/count">'
        '<button id="count-submit" type="submit">Count</button></form>\n'
        '<form method="post" action="/logout">'
        '<button id="logout-submit" type="submit">Log out</button></form>\n'
        '<p><a id="login-link" href="/login">Log in</a></p>\n'
        '<p><a id="sessions-link" href="/sessions">Your sessions</a></p>'
    )


async def login_form(request: Request) -> Response:
    """Show the login form: a user name and a remember-me box (no password: this is a demo)."""
    return _page(
        '<form method="post" action="/login">\n'
        '<label for="username">User name</label> <input id="username" name="username">\n'
        '<label for="remember_me">Remember me</label> '
        '<input id="remember_me" name="remember_me" type="checkbox" value="1">\n'
        '<button id="login-submit" type="submit">Log in</button>\n'
        "</form>"
    )


async def _form(request: Request) -> dict[str, str]:
    # Parsed by hand: Starlette's request.form() needs python-multipart for this alone.
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


async def login_submit(request: Request) -> Response:
    """Log the user in: a new session id (against fixation), remember-me as ticked."""
    form = await _form(request)
    username = form.get("username", "").strip()
    if not username:
        return _see_other("/login")
    remember = form.get("remember_me") == "1"
    if request.session.get("user") not in (None, username):
        # A session belongs to one user for life: another user starts from a fresh one.
        await logout(request)
    request.session["user"] = username
    request.session["remember_me"] = remember
    # The user agent goes into the user's list of sessions (encrypted at rest), cut short:
    # it is the client's to choose, and metadata counts against maximum_data_size.
    agent = request.headers.get("user-agent", "")[:_AGENT_LENGTH]
    await login(request, remember_me=remember, user=username, metadata={"user_agent": agent})
    return _see_other("/")


_AGENT_LENGTH = 300
_TIME = "%Y-%m-%d %H:%M:%S UTC"


async def sessions_page(request: Request) -> Response:
    """List the logged-in user's sessions, the current one marked, and "log out elsewhere"."""
    user = request.session.get("user")
    if not user:
        return _see_other("/login")
    current = session_public_id(request)
    store = await session_store(request)
    rows = []
    for info in await store.list_sessions(str(user)):
        this = info.public_id == current
        agent = str(info.metadata.get("user_agent", ""))
        cells = (
            info.public_id + (" (this session)" if this else ""),
            info.created_at.strftime(_TIME),
            info.last_active_at.strftime(_TIME),
            info.expires_at.strftime(_TIME),
            "yes" if info.remember_me else "no",
            agent,
        )
        rows.append(
            f'<tr class="session{" current" if this else ""}" '
            f'data-public-id="{html.escape(info.public_id)}">'
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
            + "</tr>"
        )
    return _page(
        f'<p id="state">logged in as {html.escape(str(user))}</p>\n'
        f'<p id="session-count">{len(rows)}</p>\n'
        '<table id="sessions">\n<tr><th>Public id</th><th>Created</th><th>Last active</th>'
        "<th>Expires</th><th>Remember me</th><th>User agent</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n"
        '<form method="post" action="/sessions/others">'
        '<button id="logout-others-submit" type="submit">Log out everywhere else</button>'
        "</form>\n"
        '<p><a id="home-link" href="/">Home</a></p>'
    )


async def logout_others(request: Request) -> Response:
    """End every session of the user but this one, in one step (``revoke_user(keep=...)``)."""
    user = request.session.get("user")
    current = session_public_id(request)
    if user and current is not None:
        store = await session_store(request)
        await store.revoke_user(str(user), keep=current)
    return _see_other("/sessions")


async def count(request: Request) -> Response:
    """Add one to the counter (the first write creates the session)."""
    request.session["count"] = int(request.session.get("count", 0)) + 1
    return _see_other("/")


async def logout_submit(request: Request) -> Response:
    """Log out: the session is deleted and the cookie expired."""
    await logout(request)
    return _see_other("/")


async def healthz(request: Request) -> Response:
    """Health check: excluded from sessions, so it costs no Redis command."""
    return PlainTextResponse("ok")


def create_app(
    cfg: SessionStore[Any]
    | SessionConfig
    | Mapping[str, Any]
    | str
    | os.PathLike[str]
    | None = None,
    *,
    secure: bool = True,
) -> Starlette:
    """Build the app on ``cfg``: a config file, mapping, ``SessionConfig`` or an open store.

    Memory when ``None``. An open store is used as it is and left open.

    ``secure=False`` drops the cookie's ``Secure`` attribute, for plain http only.
    """
    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/count", count, methods=["POST"]),
        Route("/logout", logout_submit, methods=["POST"]),
        Route("/sessions", sessions_page, methods=["GET"]),
        Route("/sessions/others", logout_others, methods=["POST"]),
        Route("/healthz", healthz),
    ]
    options: dict[str, Any] = {"secure": secure, "exclude": ["/healthz"]}
    session = Middleware(SessionMiddleware, cfg={} if cfg is None else cfg, **options)
    return Starlette(routes=routes, middleware=[session])


# uvicorn serves plain http here, where a browser drops a Secure cookie: the demo turns Secure
# off unless LOGIN_APP_SECURE=1 says it runs behind https. A real app keeps the default (on).
app = create_app(
    os.environ.get("LOGIN_APP_CONFIG") or None,
    secure=os.environ.get("LOGIN_APP_SECURE") == "1",
)


def main(argv: list[str] | None = None) -> None:
    """Run the app with uvicorn: ``python examples/login_app.py [--config FILE] [--port N]``."""
    import uvicorn  # noqa: PLC0415 - only this entry point serves the app itself

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="session config file (default: in-memory sessions)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--secure", action="store_true", help="set Secure (behind https)")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.config, secure=args.secure), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
