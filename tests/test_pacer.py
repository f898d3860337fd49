"""IPeriodicTimer: deadlines at exactly start + k * interval, on a simulated clock and on both
loops; missed deadlines reported as a count; nothing after Cancel; the loop-thread check."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kit.loop import Mux

from usocket_asyncio import IIoMux, ITimer, SocketModeError, UTimer
from usocket_asyncio._pacer import IPeriodicTimer, UPeriodicTimer


class _Handle:
    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self._when = when
        self.fn = fn
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class SimLoop(asyncio.AbstractEventLoop):
    """The part of an event loop a timer uses, on a simulated clock (an AbstractEventLoop,
    as the library's loop-thread check, compiled, wants one).

    `run(until)` runs the due callbacks in order of their deadlines; `lateness()` says how
    late each one runs (the loop busy with other work), and `now` only moves forward.
    """

    def __init__(self, lateness: Callable[[], float] = lambda: 0.0) -> None:
        self.now = 1000.0
        self.lateness = lateness
        self.armed: list[float] = []  # every deadline passed to call_at, in order
        self._heap: list[tuple[float, int, _Handle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def is_running(self) -> bool:
        return False

    def call_at(self, when: float, fn: Callable[[], None]) -> _Handle:  # type: ignore[override]
        handle = _Handle(when, fn)
        self.armed.append(when)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Handle:  # type: ignore[override]
        return self.call_at(self.now + delay, fn)

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            when, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self.now = max(self.now, when + self.lateness())
            handle.fn()
        self.now = max(self.now, until)


class Ticks(UPeriodicTimer):
    def __init__(self, on: Callable[[IPeriodicTimer, int], None] | None = None) -> None:
        self.ticks: list[int] = []
        self.times: list[float] = []
        self.on = on
        self.clock: Callable[[], float] = lambda: 0.0

    def PeriodicTimerOnTick(self, timer: IPeriodicTimer, ticks: int) -> None:
        self.ticks.append(ticks)
        self.times.append(self.clock())
        if self.on is not None:
            self.on(timer, ticks)


def _sim(lateness: Callable[[], float] = lambda: 0.0) -> tuple[SimLoop, IIoMux]:
    loop = SimLoop(lateness)  # type: ignore[abstract]
    return loop, IIoMux(loop)


def test_500_ticks_at_20ms_on_time_do_not_drift() -> None:
    loop, mux = _sim()
    user = Ticks()
    user.clock = loop.time
    t = IPeriodicTimer(mux, user)
    t.Start(20)
    origin = loop.now
    loop.run(origin + 10.0)
    assert user.ticks == [1] * 500 and t.Ticks() == 500
    # each deadline is origin + k * 0.02 exactly (a product, not a sum of 0.02s)
    assert loop.armed == [origin + k * 0.02 for k in range(1, 502)]
    assert user.times[-1] == origin + 500 * 0.02
    assert t.Deadline() == origin + 501 * 0.02


def test_late_callbacks_do_not_move_the_deadlines() -> None:
    """Each callback runs 0-15 ms late (random, seeded): the deadlines stay on the grid,
    every callback reports one tick, and after 50,000 ticks (1000 s) none was lost."""
    rng = random.Random(1)
    loop, mux = _sim(lambda: rng.uniform(0.0, 0.015))
    user = Ticks()
    t = IPeriodicTimer(mux, user)
    t.Start(20)
    origin = loop.now
    loop.run(origin + 1000.0)
    assert sum(user.ticks) == t.Ticks() == 50_000
    assert set(user.ticks) == {1}
    assert loop.armed[-1] == origin + 50_001 * 0.02


def test_what_a_restarted_one_shot_timer_does() -> None:
    """The same lateness with ITimer restarted from each timeout (the SDK's way): after
    1000 s the count falls short by the sum of the delays. This is what the pacer fixes."""
    rng = random.Random(1)
    loop, mux = _sim(lambda: rng.uniform(0.0, 0.015))

    class Again(UTimer):
        count = 0

        def TimerOnTimeout(self, timer: ITimer) -> None:
            self.count += 1
            timer.Start(20)

    again = Again()
    ITimer(mux, again).Start(20)
    loop.run(loop.now + 1000.0)
    assert again.count < 0.8 * 50_000  # 7.5 ms late on average: 27.5 ms per period


def test_missed_deadlines_are_reported_as_a_count() -> None:
    """The loop is stuck for 95 ms once: the callback due at 20 ms runs at 115 ms and
    reports 5 ticks (20, 40, 60, 80, 100 have passed); the next one is due at 120 ms."""
    loop, mux = _sim()
    user = Ticks()
    t = IPeriodicTimer(mux, user)
    t.Start(20)
    origin = loop.now
    loop.lateness = lambda: 0.095
    loop.run(origin + 0.02)
    loop.lateness = lambda: 0.0
    assert user.ticks == [5] and t.Ticks() == 5
    assert t.Deadline() == origin + 6 * 0.02
    loop.run(origin + 0.19)  # 120, 140, 160, 180
    assert user.ticks == [5, 1, 1, 1, 1] and t.Ticks() == 9


def test_a_deadline_exactly_reached_counts() -> None:
    """Late by exactly two intervals (to the float): 3 ticks, not 2 or 4."""
    loop, mux = _sim()
    user = Ticks()
    t = IPeriodicTimer(mux, user)
    t.Start(20)
    origin = loop.now
    loop.lateness = lambda: (origin + 3 * 0.02) - (origin + 0.02)
    loop.run(origin + 0.02)
    assert loop.now == origin + 3 * 0.02
    assert user.ticks == [3]
    assert t.Deadline() == origin + 4 * 0.02


def test_cancel_and_restart_from_the_callback() -> None:
    loop, mux = _sim()

    def on(timer: IPeriodicTimer, ticks: int) -> None:
        if timer.Ticks() == 3:
            timer.Cancel()

    user = Ticks(on)
    t = IPeriodicTimer(mux, user)
    t.Start(10)
    loop.run(loop.now + 1.0)
    assert user.ticks == [1, 1, 1] and not t.IsRunning() and t.Deadline() is None

    restarted: list[float] = []

    def again(timer: IPeriodicTimer, ticks: int) -> None:
        restarted.append(loop.now)
        if len(restarted) == 1:
            timer.Start(50)  # a new origin: the first tick of the new period 50 ms later

    user2 = Ticks(again)
    t2 = IPeriodicTimer(mux, user2)
    t2.Start(10)
    start = loop.now
    loop.run(start + 0.2)
    assert restarted[:3] == [start + 0.01, start + 0.01 + 0.05, start + 0.01 + 2 * 0.05]
    assert t2.Ticks() == 3  # counted from the restart


def test_an_exception_in_the_callback_does_not_stop_the_timer() -> None:
    loop, mux = _sim()
    user = Ticks()

    def boom(timer: IPeriodicTimer, ticks: int) -> None:
        raise RuntimeError("app bug")

    user.on = boom
    t = IPeriodicTimer(mux, user)
    t.Start(20)
    with pytest.raises(RuntimeError):  # a real loop gives it to its exception handler
        loop.run(loop.now + 0.02)
    assert t.IsRunning()
    user.on = None
    loop.run(loop.now + 0.1)
    assert len(user.ticks) == 6


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "20", True, None])
def test_bad_interval(bad: Any) -> None:
    _, mux = _sim()
    with pytest.raises(ValueError, match="positive number of ms"):
        IPeriodicTimer(mux, Ticks()).Start(bad)


def test_needs_a_user() -> None:
    _, mux = _sim()
    with pytest.raises(TypeError, match="UPeriodicTimer"):
        IPeriodicTimer(mux, object())  # type: ignore[arg-type]


# --- on the real loops --------------------------------------------------------------------


def test_real_loop_deadlines_on_the_grid(mux: Mux) -> None:
    """50 ticks at 5 ms on asyncio and uvloop: every deadline armed is origin + k * 5 ms
    (read back from the loop's own timer handle), every tick is reported, none lost.
    """
    user = Ticks()
    user.clock = mux.loop.time
    t = IPeriodicTimer(mux, user)
    whens: list[float | None] = []

    def on(timer: IPeriodicTimer, ticks: int) -> None:
        # uvloop runs a deadline less than 0.5 ms away as call_soon: a Handle with no when()
        when = getattr(timer._handle, "when", None)  # uvloop's TimerHandle is its own class
        whens.append(when() if when is not None else None)

    user.on = on
    t.Start(5)
    origin = t._origin
    mux.run_until(lambda: t.Ticks() >= 50, what="50 ticks")
    t.Cancel()
    n = t.Ticks()
    assert sum(user.ticks) == n
    # the deadline armed after the callback that brought the count to k is origin + (k+1)*i
    counts = list(itertools.accumulate(user.ticks))
    # asyncio keeps the float given to call_at; libuv counts its timers in whole ms from
    # its own ms clock, so uvloop's handle holds the deadline rounded twice to the ms: off
    # by up to about 1 ms, and not more after 50 ticks than after 1 (nothing accumulates)
    resolution = 0.0 if mux.kind == "asyncio" else 0.0015
    for when, k in zip(whens, counts, strict=True):
        assert when is None or abs(when - (origin + (k + 1) * 0.005)) <= resolution
    assert any(w is not None for w in whens)
    # no callback before its deadline (beyond the loop's clock resolution)
    for k, at in zip(counts, user.times, strict=True):
        assert at >= origin + k * 0.005 - 0.002
    mux.run_for(0.03)
    assert t.Ticks() == n  # nothing after Cancel


def test_real_loop_cancel_from_the_callback(mux: Mux) -> None:
    def on(timer: IPeriodicTimer, ticks: int) -> None:
        timer.Cancel()

    user = Ticks(on)
    t = IPeriodicTimer(mux, user)
    t.Start(2)
    mux.run_until(lambda: bool(user.ticks), what="the first tick")
    mux.run_for(0.03)
    assert len(user.ticks) == 1 and not t.IsRunning()


def test_loop_thread_check(mux: Mux) -> None:
    t = IPeriodicTimer(mux, Ticks())
    caught: list[BaseException] = []

    def other() -> None:
        for call in (lambda: t.Start(20), t.Cancel, t.IsRunning):
            try:
                call()
            except SocketModeError as e:
                caught.append(e)

    async def main() -> None:
        th = threading.Thread(target=other)
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.001)

    mux.loop.run_until_complete(main())
    assert len(caught) == 3
    assert "IPeriodicTimer.Start from a thread other than" in str(caught[0])
    assert not t.IsRunning()
