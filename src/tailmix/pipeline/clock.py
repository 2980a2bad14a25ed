"""Time the process ran: wall time less the spells it was stopped.

A training process that is stopped (``kill -STOP``, Ctrl-Z, a frozen container) and
continued later would otherwise count the stop in its epoch time and its images a second.
(A machine's sleep is already left out: Linux's and macOS's monotonic clocks stand still
through it.) Nothing in a stopped process runs, so nothing can note the stop as it happens;
:class:`RunningClock` notices it afterwards. A thread looks at the clock every ``tick``
seconds. A look that comes ``stall`` seconds or more after the one before, over which the
process used almost no CPU time, means every thread of it was held: the gap less half a
tick (the stop came within a tick of the look before) is counted as stopped. (A long call
that held the interpreter while it computed used CPU time, so it is not mistaken for a
stop.) The clock's readings leave those spells out; :attr:`RunningClock.stopped_s` says
how long they were.
A call that holds the interpreter while it waits without computing (a read from slow
storage inside a C extension that keeps the lock) looks the same and is left out too;
the history's ``stopped_s`` shows any such spell. Each process keeps its own clock: under
several processes, a peer's stop slows the others' epochs without a ``stopped_s``.

>>> wall = iter([0.0, 0.25, 0.5, 30.5, 40.5])
>>> cpu = iter([0.0, 0.5, 1.0, 1.01, 21.01])
>>> clock = RunningClock(time_fn=lambda: next(wall), cpu_fn=lambda: next(cpu))
>>> clock.watching = True  # what entering the clock does, here without its thread
>>> clock.now(), clock.now(), clock.now()
(0.0, 0.25, 0.5)
>>> clock.now(), clock.stopped_s  # 30 s since the last look, 0.01 s of CPU: stopped
(0.625, 29.875)
>>> clock.now(), clock.stopped_s  # 10 s with 20 s of CPU (two threads): working
(10.625, 29.875)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["RunningClock"]

_IDLE = 0.05  # at most this share of a gap in CPU time: the process did not run


class RunningClock:
    """A clock that leaves out the spells its process was stopped (see the module).

    Use it as a context manager, which runs the looking thread; :meth:`now` also looks, so
    each reading is right even where the thread has not looked yet. Outside the context
    nothing is counted as stopped: a gap between readings is then only time that passed.
    """

    def __init__(self, *, tick: float = 0.25, stall: float = 2.0,
                 time_fn: Callable[[], float] = time.perf_counter,
                 cpu_fn: Callable[[], float] = time.process_time):
        if not 0 < tick < stall:
            raise ValueError(f"RunningClock needs 0 < tick < stall, got {tick} and {stall}")
        self.tick, self.stall = tick, stall
        self._time, self._cpu = time_fn, cpu_fn
        self.stopped_s = 0.0
        self.watching = False
        self._lock = threading.Lock()
        self._last = self._cpu_last = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _look(self) -> float:
        with self._lock:
            return self._look_locked()

    def _look_locked(self) -> float:
        t, cpu = self._time(), self._cpu()
        if self.watching and self._last is not None:
            gap = t - self._last
            if gap >= self.stall and cpu - self._cpu_last <= _IDLE * gap:
                self.stopped_s += gap - self.tick / 2
        self._last, self._cpu_last = t, cpu
        return t - self.stopped_s

    def now(self) -> float:
        """Seconds on the clock: the time function's reading less the stopped spells."""
        return self._look()

    def reading(self) -> tuple[float, float]:
        """``(now, stopped_s)`` read together, so a stop found by the look is in both."""
        with self._lock:
            return self._look_locked(), self.stopped_s

    def _run(self) -> None:
        while not self._done.wait(self.tick):
            self._look()

    def __enter__(self) -> RunningClock:
        if self._thread is not None:
            raise RuntimeError("RunningClock is already running (it is not re-entrant)")
        with self._lock:
            self._last, self._cpu_last = self._time(), self._cpu()
            self.watching = True
        self._done.clear()
        self._thread = threading.Thread(target=self._run, name="tailmix-clock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._look()  # a stop up to here is counted
        self.watching = False
