"""IIoMux, the event loop, and ITimer/UTimer.

This is the only module that knows about uvloop, and it imports it only when asked.
It also owns what belongs to the loop rather than to a socket: the per-loop batch of
deferred results (`_Deferred`), the thread that runs the loop (`IIoMux.on_loop`, the
thread check of every public call) and the sockets the library keeps alive (`LIVE`).
It imports nothing from the socket layer.

The loop's thread. A loop runs in one thread at a time; the library is single-threaded
and every public call checks that it comes from that thread (or that no thread runs the
loop: then calls are fine from anywhere and take effect when it runs). The mux marks the
thread by making it the owner of a lock of its own (`_owner`, a `threading.RLock` that
nobody ever waits for): `Run()` when it starts the loop (and lets go when it returns), a
mux made on the running loop (`FromLoop()` inside it) at once, and a loop the app runs
itself (`FromLoop(loop)` before it runs, `run_until_complete`) at the first call made in
it, by the exact test (`asyncio._get_running_loop()`, which costs a `getpid()` system
call). A call then costs one `_owner._is_owned()` (a C method that compares the lock's
owner with the calling thread's id: no system call, nothing allocated), inside callbacks
too: a thread the app started inside a callback cannot slip a call through while the
loop's thread is in that callback. Only when the caller does not own the lock does the
exact test decide: the loop runs in this thread after all (run later, or again in
another thread: it takes the lock now, or a new one if the old owner still holds it),
it runs in another thread (`SocketModeError`), or no thread runs it (fine). The sockets
keep a reference to the lock (`SocketBase._owner`; `_claim` hands them a new one).
Ir per check, pure Python 3.11: 180, against 487 for `threading.get_ident()` compared
with a recorded id (a new int each time, and neither the call of the builtin nor the
comparison of two large ints is specialized by the interpreter).
"""

from __future__ import annotations

import asyncio
from _thread import RLock
from asyncio import _get_running_loop
from collections.abc import Callable
from typing import Any

from ._types import SocketModeError

LIVE: set[Any] = set()
"""Every socket the library made, until the app deletes it (the app need keep no
reference). A socket adds itself when it is made and leaves at `Delete`."""


def not_on_loop(loop: asyncio.AbstractEventLoop, call: str) -> None:
    """The caller is not on the thread running `loop` (`_get_running_loop()` said so):
    raise `SocketModeError` if `loop` runs in another thread. (While no loop runs, calls
    are fine from anywhere: they take effect when it runs.)"""
    if loop.is_running():
        raise SocketModeError(
            f"{call} from a thread other than the one running the loop: the library is "
            "single-threaded; hand the call to the loop with "
            f"loop.call_soon_threadsafe(...) (only IIoMux.Terminate() may be called from "
            "any thread)"
        )


class _Deferred:
    """Callback results that completed inside a user's own call.

    A result that completes inside a user call (a `Send` the kernel took at once, a `Recv`
    that data already held can fill) must not run inside that call. Each socket records
    what it owes and registers here once; all registered sockets are served by one
    scheduled loop callback per loop iteration, not one `call_soon` each.
    """

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[Any] = []
        self._scheduled = False

    def add(self, owner: Any) -> None:
        """Register `owner`; its `_run_due()` runs on the next loop iteration."""
        self._pending.append(owner)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        pending = self._pending
        self._pending = []
        for owner in pending:
            owner._run_due()


class IIoMux:
    """The event loop the sockets run on (the SDK's `IIoMux`).

    Two ways to get one:

    - `IIoMux.Create()` makes a new loop (uvloop with `uvloop=True`); the app calls
      `Run()`, which returns once something calls `Terminate()`, then `Close()`.
    - `IIoMux.FromLoop()` wraps the loop of an asyncio application. The app keeps running
      its loop (`asyncio.run(main())`); `Terminate()` never stops that loop, it marks the
      mux terminated, and `await iomux.Terminated()` waits for that.

    Args:
        loop: the asyncio loop to run on.
        owns_loop: whether the mux made the loop (then `Close()` closes it).
    """

    __slots__ = (
        "_closed",
        "_deferred",
        "_in_run",
        "_jobs",
        "_loop",
        "_owner",
        "_owns_loop",
        "_read_area",
        "_terminated",
        "_waiters",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, owns_loop: bool = False) -> None:
        self._loop = loop
        self._owns_loop = owns_loop
        self._deferred = _Deferred(loop)
        self._in_run = False
        self._terminated = False
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        # work that ends in an app callback and is no socket's (DNS lookups): Close()
        # cancels it first, so that no such callback runs inside or after Close()
        self._jobs: set[asyncio.Task[None]] = set()
        self._read_area: bytearray | None = None
        """The bytes the loop's stream sockets read into and copy out at once (made by
        the first one; the loop reads one socket at a time)."""
        self._owner: Any = RLock()
        """Owned by the thread that runs the loop (by none before it first ran, and
        after `Run()`); see the module."""
        if _get_running_loop() is loop:
            self._owner.acquire()

    def on_loop(self, call: str) -> None:
        """The thread check of every public call: return when the caller may call now
        (it is the thread running the loop, or no thread runs it); else raise.

        The sockets' per-request calls write the fast test out
        (`self._owner._is_owned()`) and call this only when it fails.

        Raises:
            SocketModeError: `call` comes from a thread other than the one running the
                loop.
        """
        if self._owner._is_owned():
            return
        if _get_running_loop() is self._loop:
            self._claim()  # a loop run later, or run again in another thread
            return
        not_on_loop(self._loop, call)

    def _claim(self) -> None:
        """This thread runs the loop: make it the owner of `_owner`, or of a new lock
        when a thread that ran the loop before still holds the old one (the mux's
        sockets get the new one)."""
        owner = self._owner
        if owner._is_owned():
            return
        if not owner.acquire(False):
            owner = self._owner = RLock()
            owner.acquire()
            for sock in LIVE:
                if getattr(sock, "_mux", None) is self:
                    sock._owner = owner

    def _disown(self) -> None:
        """The loop stopped running in this thread (`Run()` returns): let go of the lock."""
        owner = self._owner
        while owner._is_owned():
            owner.release()

    @staticmethod
    def Create(*, uvloop: bool = False) -> IIoMux:
        """A mux on a new event loop, run by `Run()`.

        Args:
            uvloop: run on uvloop (needs the `[uvloop]` extra).

        Returns:
            The new mux; `Close()` it when done.

        Raises:
            ImportError: `uvloop=True` and uvloop is not installed (the message names the
                extra to install).
        """
        if uvloop:
            try:
                import uvloop as _uvloop
            except ImportError as e:  # pragma: no cover - depends on the install
                raise ImportError(
                    "IIoMux.Create(uvloop=True) needs uvloop: install the extra with "
                    "pip install 'usocket_asyncio[uvloop]'"
                ) from e
            loop: asyncio.AbstractEventLoop = _uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        return IIoMux(loop, owns_loop=True)

    @staticmethod
    def FromLoop(loop: asyncio.AbstractEventLoop | None = None) -> IIoMux:
        """A mux on an existing loop, for asyncio applications.

        `Terminate()` on it never stops the loop: it marks the mux terminated, which
        `await iomux.Terminated()` waits for. `Close()` never closes the loop.

        Args:
            loop: the loop; None for the running one.

        Returns:
            The mux.

        Raises:
            RuntimeError: `loop` is None and no loop is running.
        """
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "IIoMux.FromLoop() without a loop must be called from a running loop; "
                    "pass the loop, or use IIoMux.Create()"
                ) from None
        return IIoMux(loop)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio event loop."""
        return self._loop

    def Run(self) -> None:
        """Run the loop until `Terminate()` is called.

        Raises:
            RuntimeError: the loop is already running (an asyncio app: `await
                iomux.Terminated()` instead).
        """
        if self._loop.is_running():
            raise RuntimeError(
                "IIoMux.Run(): the loop is already running (an asyncio app); "
                "await iomux.Terminated() instead"
            )
        self._in_run = True
        self._claim()
        try:
            self._loop.run_forever()
        finally:
            self._in_run = False
            self._disown()

    def Terminate(self) -> None:
        """End the mux: `Run()` returns after the current loop iteration, and every
        `await iomux.Terminated()` completes.

        On a `FromLoop()` mux whose loop the app runs itself, the loop goes on running.
        Any thread may call it (the only call of the library that may come from another
        thread).
        """
        loop = self._loop
        if loop.is_closed():
            return
        if loop.is_running() and _get_running_loop() is not loop:
            loop.call_soon_threadsafe(self._terminate)
        else:
            self._terminate()

    def _terminate(self) -> None:
        self._terminated = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        if self._in_run or (self._owns_loop and not self._loop.is_closed()):
            self._loop.stop()

    async def Terminated(self) -> None:
        """Beyond the SDK: wait until `Terminate()` is called (at once if it was).

        For asyncio apps on a `FromLoop()` mux: `await iomux.Terminated()` where an SDK app
        calls `iomux->Run()`. Await it on the mux's loop.
        """
        if self._terminated:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(fut)
        await fut

    def Close(self) -> None:
        """Beyond the SDK: end the mux's sockets, and close a loop made by `Create()`.

        Lookups still pending (`IDns.GetHostByName`) end first, without a callback, then
        every socket still open on the mux is deleted (no callback follows, as for
        `ISocket.Delete()`), quietly: no `ResourceWarning` for an unclosed transport, no
        pending task left behind. No app callback runs inside `Close()` or after it. A loop
        made by `Create()` then finishes its closes and its remaining tasks (cancelled) and
        is closed; a `FromLoop()` loop is never closed. Calling it twice is harmless.
        """
        self._closed = True
        jobs, self._jobs = self._jobs, set()
        if self._loop.is_closed():
            return  # (its tasks ended with it: cancelling one now would need the loop)
        for job in jobs:
            job.cancel()
        self._delete_sockets()
        if not self._owns_loop or self._loop.is_running():
            return
        loop = self._loop
        try:
            loop.run_until_complete(asyncio.sleep(0))  # the transports' closes run
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:  # bounded: a task that ignores its cancellation cannot hang Close
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()

    def _check_open(self, call: str) -> None:
        """Raise unless the mux may take new work (it was not closed).

        Raises:
            SocketModeError: `Close()` was called (or the loop is closed).
        """
        if self._closed or self._loop.is_closed():
            raise SocketModeError(
                f"{call} after IIoMux.Close(): the mux is closed; make the call before "
                "Close(), or make a new mux (IIoMux.Create()) and use that"
            )

    def _add_job(self, job: asyncio.Task[None]) -> None:
        """Track `job`, work that ends in an app callback and belongs to no socket (a DNS
        lookup), until it is done; `Close()` cancels what is left."""
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _is_closed(self) -> bool:
        """True once `Close()` was called: no app callback may run any more."""
        return self._closed

    def _delete_sockets(self) -> None:
        for sock in [s for s in LIVE if getattr(s, "_mux", None) is self]:
            if sock in LIVE:  # deleting one may delete others (a DTLS listener's peers)
                try:
                    sock.Delete()
                except SocketModeError:
                    pass


class UTimer:
    """The user side of a timer: override `TimerOnTimeout`."""

    def TimerOnTimeout(self, timer: ITimer) -> None:
        """Called once per `Start` when the time is up."""


class ITimer:
    """A one-shot timer on an `IIoMux`.

    Args:
        iomux: the loop to run on.
        user: receives `TimerOnTimeout(timer)`.
    """

    __slots__ = ("_handle", "_iomux", "_user")

    def __init__(self, iomux: IIoMux, user: UTimer) -> None:
        self._iomux = iomux
        self._user = user
        self._handle: asyncio.TimerHandle | None = None

    def Start(self, ms: int) -> None:
        """(Re)start: `TimerOnTimeout` follows after `ms` milliseconds."""
        self._iomux.on_loop("ITimer.Start")
        self.Cancel()
        self._handle = self._iomux.loop.call_later(max(0, ms) / 1000.0, self._fire)

    def Cancel(self) -> None:
        """Stop the timer; no `TimerOnTimeout` follows."""
        self._iomux.on_loop("ITimer.Cancel")
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def IsRunning(self) -> bool:
        """True between `Start` and the timeout (or `Cancel`)."""
        self._iomux.on_loop("ITimer.IsRunning")
        return self._handle is not None

    def _fire(self) -> None:
        self._handle = None
        if self._iomux._closed:  # `Close()` runs the loop on a little: no callback then
            return
        self._user.TimerOnTimeout(self)


def call_user(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a user callback; an exception goes to the loop's exception handler."""
    try:
        return fn(*args)
    except Exception as e:
        loop.call_exception_handler(
            {"message": f"exception in callback {getattr(fn, '__qualname__', fn)}", "exception": e}
        )
        return None
