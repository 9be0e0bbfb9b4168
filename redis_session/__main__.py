"""Command line: ``python -m redis_session {demo,check,stats}`` (also ``redis-session-store``).

``demo [--config FILE]`` walks one session through its life (create, load, save, regenerate,
delete) and prints each step, on the in-memory provider by default or on the Redis a config
file names. The operator commands, ``check CONFIG`` and ``stats CONFIG``, live in ``_cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from ._cli import add_commands
from ._errors import RedisSessionError

__all__ = ["main"]


def _short(session_id: str) -> str:
    # The id is a bearer credential: show only enough of it to tell two ids apart.
    return f"{session_id[:6]}…"


async def _demo(config: str | None) -> None:
    from ._opener import open_session_store  # noqa: PLC0415 - keep `--help` instant

    source: str | dict[str, object] = config if config is not None else {}
    async with open_session_store(source) as store:
        print(f"opened {store!r}")
        session = await store.create({"username": "john", "groups": ["admins", "dev"]})
        print(f"create     -> id {_short(session.id)}, data {session.data}")
        print(f"              expires at {session.expires_at:%Y-%m-%d %H:%M:%S} UTC")

        loaded = await store.load(session.id)
        assert loaded is not None
        print(f"load       -> data {loaded.data} (inactivity clock slid)")

        loaded.data["theme"] = "dark"
        await store.save(loaded)
        print(f"save       -> data {loaded.data}")

        stale = session  # still carries the version it was created with
        stale.data["theme"] = "light"
        try:
            await store.save(stale)
        except RedisSessionError as exc:
            print(f"save stale -> refused: {type(exc).__name__} (no lost update)")

        renewed = await store.regenerate(loaded)
        print(
            f"regenerate -> new id {_short(renewed.id)}; old id loads as "
            f"{await store.load(session.id)}"
        )

        await store.delete(renewed)
        print(f"delete     -> new id loads as {await store.load(renewed.id)}")
        print(f"statistics -> {store.statistics()}")


def _run_demo(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_demo(args.config))
    except RedisSessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m redis_session")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="walk a session through create, load, save, regenerate and delete"
    )
    demo.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file with a session: section (default: the in-memory provider)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="log what the store does")
    demo.set_defaults(run=_run_demo, log_level=logging.WARNING)
    add_commands(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else args.log_level,
        format="%(levelname)s %(name)s: %(message)s",
    )
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
