"""The thread check is exact: a call from a thread other than the one running the loop
raises `SocketModeError`, also while the loop's thread is inside a callback (an app
that starts a thread in a callback and calls at once), and however the loop runs.

- the providers' calls and ITimer's, from a thread started inside a callback;
- the loop's thread is recorded for a loop made by `IIoMux.Create()` and run by `Run()`,
  for a `FromLoop()` mux made inside the running loop, and for one made before its loop
  runs (then run by the app), on both loops;
- while no thread runs the loop, calls from any thread are accepted (they take effect
  when it runs), and a loop run again in another thread is that thread's.
(Every call of each socket kind: the conformance checks
`check_calls_from_a_thread_inside_a_callback` and its datagram twin.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kit.loop import LOOPS, Mux, Recorder
from kit.streams import from_a_thread_here, refused

from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    IIoMux,
    ISocket,
    ITimer,
    SocketModeError,
    UTimer,
)


class Ticker(UTimer):
    def __init__(self, inside: Callable[[ITimer], None]) -> None:
        self.inside = inside
        self.fired = 0

    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.fired += 1
        self.inside(timer)


@contextlib.contextmanager
def loop_on_another_thread(mux: IIoMux, first: Callable[[], None] | None = None) -> Iterator[None]:
    """Run the loop on a new thread for the body of the `with` (`first` called inside
    the running loop before the body starts); the loop stops, and the thread ends, when
    the body does."""
    inside = threading.Event()
    leave = threading.Event()

    async def hold() -> None:
        if first is not None:
            first()
        inside.set()
        while not leave.is_set():
            await asyncio.sleep(0.005)

    runner = threading.Thread(target=lambda: mux.loop.run_until_complete(hold()))
    runner.start()
    try:
        assert inside.wait(10)
        yield
    finally:
        leave.set()
        runner.join(10)


def test_timer_and_provider_calls_from_a_thread_inside_a_callback(
    mux: Mux, log: IInstanceLog
) -> None:
    """Inside TimerOnTimeout the loop's thread waits for a thread that calls ITimer's
    Start/Cancel/IsRunning, and every provider's CreateSocket and UpgradeToTLSSocket:
    each raises, and the timer and providers work afterwards."""
    tcp = CreateTCPSocketProvider()
    tls = CreateTLSSocketProvider(tcp)
    udp = CreateUDPSocketProvider()
    plain = tcp.CreateSocket(mux, Recorder(), log)
    said: dict[str, str] = {}

    def calls(timer: ITimer) -> dict[str, Callable[[], object]]:
        return {
            "ITimer.Start": lambda: timer.Start(10),
            "ITimer.Cancel": timer.Cancel,
            "ITimer.IsRunning": timer.IsRunning,
            "TCP CreateSocket": lambda: tcp.CreateSocket(mux, Recorder(), log),
            "UDP CreateSocket": lambda: udp.CreateSocket(mux, Recorder(), log),
            "TLS CreateSocket": lambda: tls.CreateSocket(mux, Recorder(), log),
            "UpgradeToTLSSocket": lambda: tls.UpgradeToTLSSocket(plain, mux, Recorder(), log),
        }

    user = Ticker(lambda t: said.update(from_a_thread_here(calls(t))))
    timer = ITimer(mux, user)
    timer.Start(0)
    mux.run_until(lambda: user.fired == 1, what="the timer")
    refused(said, calls(timer))
    user.inside = lambda t: None
    assert not timer.IsRunning()
    timer.Start(0)
    mux.run_until(lambda: user.fired == 2, what="the timer again")
    tcp.CreateSocket(mux, Recorder(), log).Delete()
    plain.Delete()


def _calls_while_running(mux: IIoMux, log: IInstanceLog) -> dict[str, str]:
    """Inside a socket's SocketBindResult (the loop's thread in it): what Send, Recv and
    GetLocalAddress said from another thread."""
    said: dict[str, str] = {}
    rec = Recorder()

    def inside(s: ISocket, addr: str, port: int) -> None:
        said.update(
            from_a_thread_here(
                {
                    "SendTo": lambda: s.SendTo(b"x", None, "127.0.0.1", port),
                    "Recv": lambda: s.Recv(bytearray(4)),
                    "GetLocalAddress": s.GetLocalAddress,
                }
            )
        )
        s.Delete()
        mux.Terminate()

    rec.hooks["bind"] = inside
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    sock.Bind("127.0.0.1", 0)
    return said


@pytest.mark.parametrize("loop", LOOPS)
def test_recorded_for_create_and_run(loop: str, log: IInstanceLog) -> None:
    mux = IIoMux.Create(uvloop=loop == "uvloop")
    try:
        said = _calls_while_running(mux, log)
        guard = mux.loop.call_later(10, mux.loop.stop)
        mux.Run()
        guard.cancel()
        assert set(said) == {"SendTo", "Recv", "GetLocalAddress"}
        refused(said, dict.fromkeys(said, lambda: None))
    finally:
        mux.Close()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("made", ["inside the running loop", "before the loop runs"])
def test_recorded_for_a_loop_the_app_runs(loop: str, made: str, log: IInstanceLog) -> None:
    """A `FromLoop()` mux, made inside the running loop or before its loop runs."""
    created = IIoMux.Create(uvloop=loop == "uvloop")
    aloop = created.loop
    said: list[dict[str, str]] = []

    async def main(mux: IIoMux | None) -> None:
        if mux is None:
            mux = IIoMux.FromLoop()
        said.append(_calls_while_running(mux, log))
        await asyncio.wait_for(mux.Terminated(), 10)

    try:
        if made == "before the loop runs":
            aloop.run_until_complete(main(IIoMux.FromLoop(aloop)))
        else:
            aloop.run_until_complete(main(None))
        assert set(said[0]) == {"SendTo", "Recv", "GetLocalAddress"}
        refused(said[0], dict.fromkeys(said[0], lambda: None))
    finally:
        created.Close()


@pytest.mark.parametrize("loop", LOOPS)
def test_while_no_thread_runs_the_loop_any_thread_may_call(loop: str, log: IInstanceLog) -> None:
    """Calls from another thread while the loop is not running are accepted and take
    effect when it runs; a loop then run by another thread is that thread's: calls from
    the first thread raise."""
    mux = IIoMux.Create(uvloop=loop == "uvloop")
    rec = Recorder()
    got: list[Any] = []
    try:
        sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)
        t = threading.Thread(target=lambda: got.append(sock.Bind("127.0.0.1", 0)))
        t.start()
        t.join(10)
        assert got == [None]
        mux.loop.run_until_complete(asyncio.sleep(0.05))
        assert rec.names() == ["bind"]
        # now another thread runs the loop; this (the first) thread's calls must raise
        errors: list[str] = []
        with loop_on_another_thread(mux):
            try:
                sock.Recv(bytearray(4))
            except SocketModeError as e:
                errors.append(str(e))
        assert len(errors) == 1 and "call_soon_threadsafe" in errors[0], errors
        sock.Delete()
    finally:
        mux.Close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_loop_run_again_in_another_thread_is_that_threads(loop: str, log: IInstanceLog) -> None:
    """The app runs the loop in this thread, and a call made in it marks this thread as
    the loop's; later another thread runs the loop and calls first. From then on that
    thread's calls pass and this thread's raise, though it marked the loop before (the
    mux marks the new thread with a new lock, which it hands to the sockets it has)."""
    mux = IIoMux.Create(uvloop=loop == "uvloop")
    rec = Recorder()
    said: dict[str, str] = {}

    def call(who: str) -> None:
        try:
            sock.Recv(bytearray(4))
            said[who] = "accepted"
        except SocketModeError as e:
            said[who] = str(e)

    try:
        sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)

        async def first() -> None:
            sock.Bind("127.0.0.1", 0)  # made in the running loop: this thread is its
            await asyncio.sleep(0.01)

        mux.loop.run_until_complete(first())
        assert rec.names() == ["bind"]
        with loop_on_another_thread(mux, lambda: call("the thread running the loop now")):
            call("the thread that ran it before")
        assert said["the thread running the loop now"] == "accepted", said
        assert "call_soon_threadsafe" in said["the thread that ran it before"], said
        sock.Delete()  # no thread runs the loop now: fine from here
    finally:
        mux.Close()


@pytest.mark.parametrize("loop", LOOPS)
def test_run_lets_go_of_the_loop_when_it_returns(loop: str, log: IInstanceLog) -> None:
    """`Run()` marks this thread as the loop's only while it runs: once it returned and
    another thread runs the loop, this thread's calls raise, even before that thread
    made any call of its own."""
    mux = IIoMux.Create(uvloop=loop == "uvloop")
    rec = Recorder()
    said: list[str] = []
    try:
        sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log)

        def bound(s: ISocket, addr: str, port: int) -> None:
            s.Recv(bytearray(4))  # a call made inside Run(): this thread is the loop's
            mux.Terminate()

        rec.hooks["bind"] = bound
        sock.Bind("127.0.0.1", 0)
        guard = mux.loop.call_later(10, mux.loop.stop)
        mux.Run()
        guard.cancel()
        assert rec.names() == ["bind"]
        with loop_on_another_thread(mux):
            try:
                sock.GetLocalAddress()
                said.append("accepted")
            except SocketModeError as e:
                said.append(str(e))
        assert len(said) == 1 and "call_soon_threadsafe" in said[0], said
        sock.Delete()
    finally:
        mux.Close()
