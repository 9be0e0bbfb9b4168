"""Tasks: the background tasks of one owner (:class:`Supervisor`), child tasks (:func:`gather_all`).

A :class:`Supervisor` spawns named tasks and keeps them referenced until they end; a task that
ends with an exception nobody awaits is logged (with the task's name) instead of surfacing as
"exception was never retrieved" at garbage collection. Its :meth:`~Supervisor.aclose` is the
owner's cleanup: it cancels the tasks that are to be cancelled, waits for all of them (and for
closes handed to it), and is

- *re-cancelling*: redis-py's use of ``asyncio.wait_for`` on Python 3.11 can swallow a
  cancellation that lands as its inner await completes, so a loop that ought to be gone keeps
  running; tasks spawned with ``on_close="cancel"`` are cancelled again every
  ``recancel`` seconds until they end;
- *bounded*: it gives up after ``timeout`` seconds, leaving what still runs;
- *shielded*: neither an anyio cancel scope nor a cancellation of the calling task cuts it
  short (a close cut half-way leaks sockets); the caller's cancellation is raised again once
  the cleanup is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Literal, TypeVar

import anyio

__all__ = ["OnClose", "Supervisor", "gather_all"]

logger = logging.getLogger("redis_session")

T = TypeVar("T")

#: What :meth:`Supervisor.aclose` does to a task: ``cancel`` it (again and again, until it
#: ends), cancel it ``once`` (its own cleanup then runs undisturbed), or let it ``finish``.
OnClose = Literal["cancel", "once", "finish"]

#: Default bound on a cleanup: closing pools and connections, tasks winding down.
CLEANUP_TIMEOUT = 4.0
#: How long a cleanup waits before cancelling a task again (see the module docstring).
RECANCEL_INTERVAL = 0.1


class Supervisor:
    """The background tasks of one owner, and their bounded, shielded cleanup."""

    def __init__(
        self, *, timeout: float = CLEANUP_TIMEOUT, recancel: float = RECANCEL_INTERVAL
    ) -> None:
        self._timeout = timeout
        self._recancel = recancel
        #: Running tasks and what aclose() does to each; a task leaves as it ends.
        self._tasks: dict[asyncio.Task[Any], OnClose] = {}

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str, on_close: OnClose = "cancel"
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task named ``name`` until it ends or :meth:`aclose` stops it."""
        task = asyncio.create_task(coro, name=name)
        self._tasks[task] = on_close
        task.add_done_callback(self._ended)
        return task

    def running(self) -> list[asyncio.Task[Any]]:
        """Return the tasks that have not ended yet."""
        return [t for t in self._tasks if not t.done()]

    def abandon(self) -> None:
        """Forget every task: their event loop has closed, so none can ever run again."""
        self._tasks.clear()

    async def aclose(self, closing: Callable[[], Iterable[Awaitable[Any]]] | None = None) -> None:
        """Stop the tasks, then run ``closing()`` and wait for everything (bounded, shielded).

        Tasks spawned with ``on_close="cancel"`` are cancelled, again every ``recancel``
        seconds, and waited for before ``closing()`` is called (a close must not pull a pool
        from under a task still using it); ``"once"`` tasks are cancelled once; ``"finish"``
        tasks are left to finish. Tasks spawned meanwhile (closes begun as the others wind
        down) are waited for too. The awaitables ``closing()`` returns run as ``"finish"``
        tasks: their exceptions are logged, not raised. A cancellation of the caller is
        raised once all that is over (or the bound is reached).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        for task, on_close in list(self._tasks.items()):
            if on_close != "finish":
                task.cancel()
        interrupted: BaseException | None = None
        # Shielded from anyio cancel scopes; the caller's own cancellation is held back below.
        with anyio.CancelScope(shield=True):
            interrupted = await self._wait(loop, deadline, stubborn_only=True)
            for aw in closing() if closing is not None else ():
                self.spawn(_awaited(aw), name="redis_session close", on_close="finish")
            later = await self._wait(loop, deadline, stubborn_only=False)
            interrupted = interrupted or later
        if interrupted is not None:
            raise interrupted

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, deadline: float, *, stubborn_only: bool
    ) -> BaseException | None:
        """Wait until the tasks (or only the re-cancelled ones) have ended, or ``deadline``.

        Returns the cancellation the caller received meanwhile, if any (to raise later).
        """
        interrupted: BaseException | None = None
        while True:
            pending = [
                t
                for t, on_close in self._tasks.items()
                if not t.done() and (on_close == "cancel" or not stubborn_only)
            ]
            remaining = deadline - loop.time()
            if not pending or remaining <= 0:
                return interrupted
            try:
                await asyncio.wait(pending, timeout=min(self._recancel, remaining))
            except asyncio.CancelledError as exc:
                interrupted = interrupted or exc  # the cleanup goes on; raised afterwards
            for task in pending:
                if not task.done() and self._tasks.get(task) == "cancel":
                    task.cancel()  # a cancellation lost in wait_for (Python 3.11)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("background task %s failed", task.get_name(), exc_info=exc)


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Run ``aws`` concurrently and return their results, like ``asyncio.gather``.

    Unlike ``asyncio.gather``, a cancellation of the caller is re-raised as the very exception
    the caller received (after the children are cancelled and awaited, shielded and bounded):
    gather re-raises a child's instead, which an anyio cancel scope does not recognise as its
    own, so the cancellation escaped the scope and cancelled the whole task.
    """
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            await asyncio.wait(tasks)
        for task in tasks:  # their outcome is the cancellation's; mark it seen
            if task.done() and not task.cancelled():
                task.exception()
        raise
    failures = [t.exception() for t in tasks]  # every outcome seen, not just the first raised
    first = next((f for f in failures if f is not None), None)
    if first is not None:
        raise first
    return [task.result() for task in tasks]
