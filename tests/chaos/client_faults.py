"""The client misbehaving at the worst moment: faults injected into the test process itself.

Server-side faults alone never caught a client that acts on what it saw a second ago. These
run in the same process as the store, combined with each server-side scenario:

``stall``
    The event loop blocks in ``time.sleep`` for 0.2-1.5 s at random moments (a slow request
    handler, a synchronous call in an async app), and once more just after each fault begins.
``gc``
    Pauses at the garbage collector's own trigger points: a ballast of cyclic objects keeps the
    collector busy, and a ``gc.callbacks`` hook lengthens a collection in the event loop's
    thread to 0.2-1.5 s now and then. Unlike a stall, these land at an arbitrary allocation
    inside the library's code, not only where a task yields.
``cpu``
    CPU starvation: a busy sibling process pinned to the same CPU as the event loop's thread
    (which is pinned too, for the scenario), so the loop gets about half a core.
``cancel``
    A cancellation storm: every few milliseconds, the calls in flight in a few random load
    tasks are cancelled (on top of the load's own occasional application timeouts).

Everything is bounded and stops by itself: stalls and pauses are capped in count and length,
the busy process exits on its own deadline (or once this process is gone) and is killed (by
its pid) and reaped at the end anyway, the CPU affinity is restored, the hook removed and the
ballast released.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio

#: Every kind, in the order reports name them.
KINDS = ("stall", "gc", "cpu", "cancel")
#: Length of an injected stall or GC pause, in seconds.
PAUSE_RANGE = (0.2, 1.5)
#: Quiet time between two random stalls (or two GC pauses), in seconds.
GAP_RANGE = (0.5, 2.0)
#: At most this many stalls and this many GC pauses per scenario.
MAX_PAUSES = 60
#: Extra lateness allowed to a call that ran while the loop had half a core.
CPU_SLACK = 1.0
#: The busy process ends by itself after this long, or as soon as the test process is gone.
HOG_LIFETIME = 300.0
#: Ballast for the collector: this many small reference cycles (about 40 MB).
BALLAST = 250_000

# Burns CPU until its deadline, or until its parent (this process) is gone.
_HOG = (
    "import os, sys, time\n"
    "end, parent = time.monotonic() + float(sys.argv[1]), int(sys.argv[2])\n"
    "while time.monotonic() < end and os.getppid() == parent:\n"
    "    for _ in range(100_000): pass\n"
)


def parse_kinds(text: str) -> frozenset[str]:
    """``"calm"``, ``"all"`` or a ``+``-separated list of :data:`KINDS`."""
    text = text.strip()
    if text in ("", "calm"):
        return frozenset()
    if text == "all":
        return frozenset(KINDS)
    kinds = frozenset(part.strip() for part in text.split("+"))
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"unknown client fault(s) {sorted(unknown)}; choose from {KINDS}")
    return kinds


def label(kinds: Iterable[str]) -> str:
    """The name of a set of kinds, as :func:`parse_kinds` reads it back."""
    chosen = [k for k in KINDS if k in set(kinds)]
    if not chosen:
        return "calm"
    if len(chosen) == len(KINDS):
        return "all"
    return "+".join(chosen)


class ClientFaults:
    """Inject the ``kinds`` of faults between ``async with`` and :meth:`calm` (or the exit).

    ``cancel_some(rnd, n)`` cancels the calls in flight in ``n`` random load tasks (the load
    driver's method); it is needed only for ``cancel``.
    """

    def __init__(
        self,
        kinds: frozenset[str],
        *,
        seed: int,
        cancel_some: Callable[[random.Random, int], int] | None = None,
    ) -> None:
        self.kinds = kinds
        self._random = random.Random(seed)
        self.cancel_some = cancel_some
        #: Every pause of the event loop injected here: (start, end), ``time.monotonic()``.
        self.pauses: list[tuple[float, float]] = []
        self.stalls = 0
        self.gc_pauses = 0
        self.cancels = 0
        self.cpu_window: tuple[float, float | None] | None = None
        self.calm_at: float | None = None
        # Plain asyncio tasks, ended by ``_stop`` (each sees it within 30 ms): no task
        # group, whose cancel scope would enclose the scenario's own code.
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stop = asyncio.Event()
        self._hog: subprocess.Popen[bytes] | None = None
        self._affinity: set[int] | None = None
        self._ballast: list[Any] | None = None
        self._loop_thread = threading.get_ident()
        self._next_gc_pause = 0.0
        self._hook_installed = False
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def active(self) -> bool:
        """Whether faults are being injected now."""
        return bool(self.kinds) and self._started and self.calm_at is None

    async def __aenter__(self) -> ClientFaults:
        self._loop_thread = threading.get_ident()
        self._started = True
        try:
            if "stall" in self.kinds:
                rnd = random.Random(self._random.random())
                self._tasks.append(asyncio.create_task(self._staller(rnd), name="chaos staller"))
            if "cancel" in self.kinds:
                assert self.cancel_some is not None, "cancel needs the load's cancel_some"
                rnd = random.Random(self._random.random())
                self._tasks.append(asyncio.create_task(self._canceller(rnd), name="chaos storm"))
            if "gc" in self.kinds:
                self._start_gc_pauses()
            if "cpu" in self.kinds:
                self._start_hog()
        except BaseException:
            await self.calm()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.calm()

    # -- the scenario's side --

    async def calm(self) -> float:
        """Stop every fault (idempotent); return when they stopped."""
        if self.calm_at is not None:
            return self.calm_at
        self.calm_at = time.monotonic()
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        try:
            self._stop_gc_pauses()
            self._stop_hog()
        finally:
            tasks, self._tasks = self._tasks, []
            if tasks:
                with anyio.CancelScope(shield=True):
                    _, pending = await asyncio.wait(tasks, timeout=5.0)
                for task in pending:  # pragma: no cover - each ends within 30 ms of _stop
                    task.cancel()
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise RuntimeError("a client fault injector failed") from task.exception()
        return self.calm_at

    def on_fault(self) -> None:
        """A server-side fault begins: with ``stall``, block the loop within 0.3 s of it."""
        if "stall" in self.kinds and self.active:
            loop = asyncio.get_running_loop()
            delay = self._random.uniform(0.0, 0.3)
            length = self._random.uniform(*PAUSE_RANGE)
            self._timers.append(loop.call_later(delay, self._stall_if_active, length))

    def stall_now(self, seconds: float) -> None:
        """Block the event loop for ``seconds`` (whatever the kinds): a stall put by hand."""
        self._pause(seconds)
        self.stalls += 1

    def allowance(self, start: float, end: float) -> float:
        """How much longer than usual a call running from ``start`` to ``end`` may take."""
        paused = sum(
            max(0.0, min(end, b) - max(start, a)) for a, b in self.pauses if a < end and b > start
        )
        if self.cpu_window is not None:
            cpu_start, cpu_end = self.cpu_window
            if start < (cpu_end or float("inf")) and end > cpu_start:
                paused += CPU_SLACK
        return paused

    def describe(self) -> str:
        """What was injected, for the report."""
        if not self.kinds and not self.pauses:
            return "calm"
        parts = []
        stalled = sum(b - a for a, b in self.pauses)
        if self.stalls:
            parts.append(f"{self.stalls} loop stalls")
        if self.gc_pauses:
            parts.append(f"{self.gc_pauses} GC pauses")
        if self.pauses:
            longest = max(b - a for a, b in self.pauses)
            parts.append(f"loop blocked {stalled:.1f}s in all, longest {longest:.2f}s")
        if self.cpu_window is not None:
            start, end = self.cpu_window
            parts.append(f"CPU shared with a busy process for {(end or start) - start:.1f}s")
        if "cancel" in self.kinds:
            parts.append(f"{self.cancels} calls cancelled by the storm")
        return ", ".join(parts)

    # -- stalls --

    def _pause(self, seconds: float) -> None:
        start = time.monotonic()
        time.sleep(seconds)  # the point: block the event loop, as a synchronous call would
        self.pauses.append((start, time.monotonic()))

    def _stall_if_active(self, seconds: float) -> None:
        if self.active and self.stalls < MAX_PAUSES:
            self.stall_now(seconds)

    async def _staller(self, rnd: random.Random) -> None:
        while not self._stop.is_set() and self.stalls < MAX_PAUSES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), rnd.uniform(*GAP_RANGE))
            if self._stop.is_set():
                return
            self.stall_now(rnd.uniform(*PAUSE_RANGE))

    # -- cancellation storm --

    async def _canceller(self, rnd: random.Random) -> None:
        assert self.cancel_some is not None
        while not self._stop.is_set():
            await asyncio.sleep(rnd.uniform(0.005, 0.03))
            self.cancels += self.cancel_some(rnd, rnd.randint(1, 3))

    # -- GC pauses --

    def _start_gc_pauses(self) -> None:
        # Reference cycles only the cyclic collector can free: every full collection walks them.
        ballast: list[Any] = []
        for _ in range(BALLAST):
            node: list[Any] = [None, {}]
            node[0] = node
            ballast.append(node)
        self._ballast = ballast
        self._next_gc_pause = time.monotonic() + self._random.uniform(*GAP_RANGE)
        gc.callbacks.append(self._gc_hook)
        self._hook_installed = True

    def _gc_hook(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside a collection, at whatever allocation triggered it; only the event loop's
        # thread is paused (harness threads keep polling the servers meanwhile).
        if phase != "start" or threading.get_ident() != self._loop_thread:
            return
        now = time.monotonic()
        if now < self._next_gc_pause or self.gc_pauses >= MAX_PAUSES or self.calm_at is not None:
            return
        self.gc_pauses += 1
        self._pause(self._random.uniform(*PAUSE_RANGE))
        self._next_gc_pause = time.monotonic() + self._random.uniform(*GAP_RANGE)

    def _stop_gc_pauses(self) -> None:
        if self._hook_installed:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._gc_hook)
            self._hook_installed = False
        self._ballast = None

    # -- CPU starvation --

    def _start_hog(self) -> None:
        allowed = os.sched_getaffinity(0)
        cpu = self._random.choice(sorted(allowed))
        self._hog = subprocess.Popen(
            [sys.executable, "-c", _HOG, str(HOG_LIFETIME), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            os.sched_setaffinity(self._hog.pid, {cpu})
            # Pid 0 is this thread: the event loop's. Harness threads keep their CPUs.
            self._affinity = allowed
            os.sched_setaffinity(0, {cpu})
        except BaseException:
            self._stop_hog()
            raise
        self.cpu_window = (time.monotonic(), None)

    def _stop_hog(self) -> None:
        # On the event loop's thread (pid 0 below is that thread). SIGKILL is immediate, so
        # the wait is short; its bound is for a machine that is not.
        try:
            if self._affinity is not None:
                os.sched_setaffinity(0, self._affinity)
                self._affinity = None
        finally:
            hog, self._hog = self._hog, None
            if hog is not None:
                with contextlib.suppress(ProcessLookupError):
                    hog.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    hog.wait(timeout=10)
            if self.cpu_window is not None and self.cpu_window[1] is None:
                self.cpu_window = (self.cpu_window[0], time.monotonic())
