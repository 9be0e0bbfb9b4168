"""The operator commands of ``python -m redis_session``: ``check`` and ``stats``.

Each command is a subparser registered by :func:`add_commands`, with a ``run`` function that
takes the parsed arguments and returns the exit status, and a ``log_level`` (the library's own
log lines are quiet unless ``-v``: the commands report what matters themselves). Every command
takes ``--json``: one JSON document on stdout instead of lines for a person, errors included.

This module stays light: what a command needs (the store, redis-py, the checks) is imported
when it runs, so ``--help`` answers at once. A new command (``sessions list``/``revoke``, issue
13) is one more ``_add_...`` function called from :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ._cli_report import ERROR, counts, dump_json, worst
from ._errors import RedisSessionError

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operator commands on the entry point's subparsers."""
    _add_check(commands)
    _add_stats(commands)


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


# -- shared ---------------------------------------------------------------------------------------


def _fail(args: argparse.Namespace, command: str, message: str) -> int:
    """Report an error that ends a command: on stderr, or as the JSON document with --json."""
    if args.json:
        document: dict[str, Any] = {"command": command, "config": args.config, "error": message}
        print(dump_json(document))
    else:
        print(f"error: {message}", file=sys.stderr)
    return 1
