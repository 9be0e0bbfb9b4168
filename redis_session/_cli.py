"""The operator commands of ``python -m redis_session``: ``check``, ``stats``, ``sessions``.

Each command is a subparser registered by :func:`add_commands`, with a ``run`` function that
takes the parsed arguments and returns the exit status, and a ``log_level`` (the library's own
log lines are quiet unless ``-v``: the commands report what matters themselves). Every command
takes ``--json``: one JSON document on stdout instead of lines for a person, errors included.

This module stays light: what a command needs (the store, redis-py, the checks) is imported
when it runs, so ``--help`` answers at once. A new command is one more ``_add_...`` function
called from :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from ._cli_report import ERROR, counts, dump_json, worst
from ._errors import RedisSessionError

if TYPE_CHECKING:
    from ._store import SessionInfo

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operator commands on the entry point's subparsers."""
    _add_check(commands)
    _add_stats(commands)
    _add_sessions(commands)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG", help="YAML file with a session: section (as the app uses)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of text"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    parser.set_defaults(log_level=logging.CRITICAL)


# -- check ----------------------------------------------------------------------------------------


def _add_check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="validate a config and check every node it reaches (writes nothing)",
        description=(
            "Validate the configuration, open the store as the app would (TLS, Sentinel or "
            "Cluster discovery), then check every node: reachable, latency, server version "
            "and role, and the ACL permission for every command the store sends, on the keys "
            "<session.name>:*. Writes nothing. Exit status 1 when any finding is an error."
        ),
    )
    _common(check)
    check.set_defaults(run=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from ._cli_check import run_check  # noqa: PLC0415 - keep `--help` instant

    try:
        report = asyncio.run(run_check(args.config))
    except RedisSessionError as exc:
        return _fail(args, "check", str(exc))
    status = worst(report.findings)
    tally = counts(report.findings)
    if args.json:
        print(
            dump_json(
                {
                    "command": "check",
                    "config": args.config,
                    "provider": report.provider,
                    "status": status,
                    "counts": tally,
                    "findings": [f.as_json() for f in report.findings],
                }
            )
        )
    else:
        provider = f" ({report.provider})" if report.provider else ""
        print(f"check of {args.config}{provider}")
        for finding in report.findings:
            print(finding.line())
        print(
            f"{tally['error']} error(s), {tally['warning']} warning(s), {tally['ok']} ok: "
            f"{status.upper()}"
        )
    return 1 if status == ERROR else 0


# -- stats ----------------------------------------------------------------------------------------


def _add_stats(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = commands.add_parser(
        "stats",
        help="count sessions by kind and by secret (key rotation), with pool figures",
        description=(
            "Scan every master (SCAN MATCH <session.name>:*, never KEYS) and count sessions "
            "by kind (remember-me or not), tombstones, and sessions still encrypted under a "
            "previous secret; print the store's pool figures. Read-only."
        ),
    )
    _common(stats)
    stats.add_argument(
        "--batch",
        type=int,
        default=500,
        metavar="N",
        help="keys asked for per SCAN call (default 500)",
    )
    stats.set_defaults(run=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from ._cli_stats import run_stats  # noqa: PLC0415 - keep `--help` instant

    if args.batch < 1:
        return _fail(args, "stats", "--batch must be at least 1")
    try:
        report = asyncio.run(run_stats(args.config, batch=args.batch))
    except RedisSessionError as exc:
        return _fail(args, "stats", str(exc))
    if args.json:
        print(dump_json({"command": "stats", "config": args.config, **report.as_json()}))
    else:
        print(f"stats of {args.config} ({report.provider})")
        for line in report.lines():
            print(line)
    return 0


# -- sessions -------------------------------------------------------------------------------------


def _add_sessions(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = commands.add_parser(
        "sessions",
        help="list or revoke a user's sessions (by user name or public id)",
        description=(
            "A user's sessions, through the store's own API (docs/users.md): list them, or end "
            "them all, all but one, or one by its public id. Session ids are never printed; "
            "public ids (which can revoke a session, never log in as it) are."
        ),
    )
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list",
        help="the live sessions of a user, oldest first",
        description=(
            "List the live sessions of --user: public id, created, last active, expires, "
            "remember-me and the metadata the app stored at login. Listing also drops ended "
            "sessions from the user's index (as the app's own listing does)."
        ),
    )
    listing.add_argument(
        "--user", required=True, metavar="USER", help="the user, as the app names it"
    )
    _common(listing)
    listing.set_defaults(run=_run_sessions_list)

    revoke = actions.add_parser(
        "revoke",
        help="end a user's sessions (--user, optionally --all-but) or one session (--id)",
        description=(
            "--user USER: end every session of USER, in one round trip however many there "
            "are; with --all-but PUBLIC_ID, every one but that session. --id PUBLIC_ID: end "
            "that one session. Exit status 1 when --id names no live session."
        ),
    )
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", metavar="USER", help="end the sessions of this user")
    target.add_argument("--id", dest="public_id", metavar="PUBLIC_ID", help="end this session")
    revoke.add_argument(
        "--all-but", metavar="PUBLIC_ID", help="with --user: keep this session of the user's"
    )
    _common(revoke)
    revoke.set_defaults(run=_run_sessions_revoke)


def _run_sessions_list(args: argparse.Namespace) -> int:
    from ._cli_sessions import info_json, list_user_sessions  # noqa: PLC0415 - instant --help

    command = "sessions list"
    try:
        infos = asyncio.run(list_user_sessions(args.config, args.user))
    except RedisSessionError as exc:
        return _fail(args, command, str(exc))
    if args.json:
        document = {
            "command": command,
            "config": args.config,
            "user": args.user,
            "sessions": [info_json(i) for i in infos],
        }
        print(dump_json(document))
    else:
        print(f"{len(infos)} session(s) of user {args.user!r}")
        for info in infos:
            print(_info_line(info))
    return 0


def _run_sessions_revoke(args: argparse.Namespace) -> int:
    from ._cli_sessions import (  # noqa: PLC0415 - instant --help
        info_json,
        revoke_by_id,
        revoke_user_sessions,
    )

    command = "sessions revoke"
    if args.all_but is not None and args.user is None:
        return _fail(args, command, "--all-but goes with --user (the user whose sessions end)")
    try:
        if args.user is not None:
            done = asyncio.run(revoke_user_sessions(args.config, args.user, keep=args.all_but))
        else:
            done = asyncio.run(revoke_by_id(args.config, args.public_id))
    except RedisSessionError as exc:
        return _fail(args, command, str(exc))
    if args.json:
        document: dict[str, Any] = {"command": command, "config": args.config}
        if args.user is not None:
            document |= {
                "user": args.user,
                "all_but": args.all_but,
                "revoked": done.revoked,
                "remaining": [info_json(i) for i in done.remaining],
            }
        else:
            document |= {"public_id": args.public_id, "revoked": done.revoked}
        print(dump_json(document))
    elif args.user is not None:
        but = f" but {args.all_but}" if args.all_but else ""
        print(f"revoked every session of user {args.user!r}{but}")
        print(f"{len(done.remaining)} session(s) left")
        for info in done.remaining:
            print(_info_line(info))
    elif done.revoked:
        print(f"revoked session {args.public_id}")
    else:
        print(f"no live session has public id {args.public_id}", file=sys.stderr)
    return 0 if done.revoked else 1


def _info_line(info: SessionInfo) -> str:
    stamp = "%Y-%m-%d %H:%M:%S"
    kind = "remember-me" if info.remember_me else "regular"
    meta = f" {_json_line(info.metadata)}" if info.metadata else ""
    return (
        f"  {info.public_id}  created {info.created_at:{stamp}}  "
        f"last active {info.last_active_at:{stamp}}  expires {info.expires_at:{stamp}} UTC  "
        f"{kind}{meta}"
    )


def _json_line(value: Any) -> str:
    # Metadata in the text listing: one line, as JSON.
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=True)


# -- shared ---------------------------------------------------------------------------------------


def _fail(args: argparse.Namespace, command: str, message: str) -> int:
    """Report an error that ends a command: on stderr, or as the JSON document with --json."""
    if args.json:
        document: dict[str, Any] = {"command": command, "config": args.config, "error": message}
        print(dump_json(document))
    else:
        print(f"error: {message}", file=sys.stderr)
    return 1
