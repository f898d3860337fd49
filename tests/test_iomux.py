"""IIoMux (Create, FromLoop, Run, Terminate, Close) and ITimer/UTimer, on both loops."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from kit.loop import Mux

from usocket_asyncio import IIoMux, ITimer, UTimer


class Fired(UTimer):
    def __init__(self, on: object = None) -> None:
        self.calls: list[ITimer] = []
        self.on = on

    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.calls.append(timer)
        if callable(self.on):
            self.on(timer)


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_create_makes_a_fresh_loop(use_uvloop: bool) -> None:
    m = IIoMux.Create(uvloop=use_uvloop)
    try:
        assert isinstance(m.loop, asyncio.AbstractEventLoop)
        assert not m.loop.is_running() and not m.loop.is_closed()
        assert ("uvloop" in type(m.loop).__module__) is use_uvloop
        other = IIoMux.Create(uvloop=use_uvloop)
        assert other.loop is not m.loop
        other.Close()
        assert other.loop.is_closed()
    finally:
        m.Close()
    m.Close()  # twice is harmless
    m.Terminate()  # and so is Terminate on a closed loop


def test_create_uvloop_without_uvloop_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    with pytest.raises(ImportError, match=r"usocket_asyncio\[uvloop\]"):
        IIoMux.Create(uvloop=True)
    IIoMux.Create().Close()  # the default loop needs no uvloop


def test_from_loop_wraps_a_given_loop(mux: Mux) -> None:
    m = IIoMux.FromLoop(mux.loop)
    assert m.loop is mux.loop
    m.Close()  # not ours: left open
    assert not mux.loop.is_closed()


def test_from_loop_without_a_running_loop_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"IIoMux\.Create"):
        IIoMux.FromLoop()


def test_from_loop_inside_the_running_loop(mux: Mux) -> None:
    async def inside() -> IIoMux:
        return IIoMux.FromLoop()

    m = mux.loop.run_until_complete(inside())
    assert m.loop is mux.loop


def test_run_until_terminate_from_a_callback(mux: Mux) -> None:
    ran: list[str] = []
    mux.loop.call_soon(ran.append, "a")
    mux.loop.call_soon(mux.Terminate)
    mux.Run()
    assert ran == ["a"]
    # Run again after it returned
    mux.loop.call_soon(ran.append, "b")
    mux.loop.call_soon(mux.Terminate)
    mux.Run()
    assert ran == ["a", "b"]


def test_terminate_from_another_thread(mux: Mux) -> None:
    started = threading.Event()
    mux.loop.call_soon(started.set)

    def stopper() -> None:
        assert started.wait(10)
        mux.Terminate()

    t = threading.Thread(target=stopper)
    t.start()
    # a timer bounds the run, should Terminate not work
    guard_fired: list[bool] = []

    def guard_stop() -> None:
        guard_fired.append(True)
        mux.loop.stop()

    guard = mux.loop.call_later(10, guard_stop)
    mux.Run()
    guard.cancel()
    t.join(5)
    assert started.is_set() and not guard_fired and not t.is_alive()


def test_run_inside_the_running_loop_raises(mux: Mux) -> None:
    async def inside() -> None:
        with pytest.raises(RuntimeError, match="already running"):
            mux.Run()

    mux.loop.run_until_complete(inside())


def test_timer_fires_once(mux: Mux) -> None:
    user = Fired()
    t = ITimer(mux, user)
    assert not t.IsRunning()
    t.Start(20)
    assert t.IsRunning() and user.calls == []
    mux.run_until(lambda: bool(user.calls), what="the timeout")
    assert user.calls == [t] and not t.IsRunning()
    mux.run_for(0.05)
    assert user.calls == [t]


def test_timer_cancel(mux: Mux) -> None:
    user = Fired()
    t = ITimer(mux, user)
    t.Start(10)
    t.Cancel()
    assert not t.IsRunning()
    t.Cancel()  # twice is harmless
    mux.run_for(0.05)
    assert user.calls == []


def test_timer_restart_replaces_the_pending_timeout(mux: Mux) -> None:
    user = Fired()
    t = ITimer(mux, user)
    t.Start(5)
    t.Start(30)
    t.Start(0)
    mux.run_until(lambda: bool(user.calls))
    mux.run_for(0.06)
    assert user.calls == [t]


def test_timers_fire_in_order_and_restart_from_the_callback(mux: Mux) -> None:
    order: list[str] = []
    a_user = Fired(lambda tm: order.append("a"))
    b_user = Fired(lambda tm: order.append("b"))
    a, b = ITimer(mux, a_user), ITimer(mux, b_user)
    b.Start(40)
    a.Start(5)
    rounds = [0]

    def again(tm: ITimer) -> None:
        rounds[0] += 1
        order.append("c")
        if rounds[0] < 3:
            tm.Start(1)
            assert tm.IsRunning()

    c = ITimer(mux, Fired(again))
    c.Start(-5)  # a negative time fires at once
    mux.run_until(lambda: len(order) == 5, what="all timeouts")
    # deadlines decide the order: a (5 ms) before b (40 ms); c ran three times
    assert order.index("a") < order.index("b") and order.count("c") == 3
    assert not a.IsRunning() and not b.IsRunning() and not c.IsRunning()


def test_timer_exception_goes_to_the_exception_handler(mux: Mux) -> None:
    def boom(tm: ITimer) -> None:
        raise RuntimeError("boom")

    user = Fired(boom)
    t = ITimer(mux, user)
    t.Start(1)
    mux.run_until(lambda: bool(user.calls))
    mux.run_for(0.01)
    errs = mux.take_errors()
    assert len(errs) == 1 and isinstance(errs[0]["exception"], RuntimeError)
    t.Start(1)  # the timer still works
    mux.run_until(lambda: len(user.calls) == 2)
    mux.take_errors()


def test_utimer_default_does_nothing(mux: Mux) -> None:
    t = ITimer(mux, UTimer())
    t.Start(0)
    mux.run_for(0.01)
    assert not t.IsRunning()


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_no_timeout_after_close(use_uvloop: bool) -> None:
    """`Close()` runs the loop it made a little longer (the transports' closes, the
    cancelled tasks): a timer due then calls no `TimerOnTimeout` (no app callback runs
    inside `Close()` or after it), on both loops."""
    m = IIoMux.Create(uvloop=use_uvloop)

    async def slow_to_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.02)  # Close waits for it: the 1 ms timer is due meanwhile
            raise

    task = m.loop.create_task(slow_to_cancel())
    m.loop.run_until_complete(asyncio.sleep(0))  # the task is waiting
    user = Fired()
    t = ITimer(m, user)
    t.Start(0)
    later = ITimer(m, user)
    later.Start(1)
    m.Close()
    assert task.cancelled()
    assert user.calls == []
    assert m.loop.is_closed()
