"""IIoMux, the event loop, and ITimer/UTimer.

This is the only module that knows about uvloop, and it imports it only when asked.
It also owns the per-loop batch of deferred results (see `_Deferred`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from ._base import check_loop_thread


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
    """The event loop the sockets run on.

    Create one with `IIoMux.Create()` (a new loop, optionally uvloop) or wrap the loop of
    an asyncio application with `IIoMux.FromLoop()`.
    """

    __slots__ = ("_deferred", "_loop", "_owns_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, owns_loop: bool = False) -> None:
        self._loop = loop
        self._owns_loop = owns_loop
        self._deferred = _Deferred(loop)

    @staticmethod
    def Create(*, uvloop: bool = False) -> IIoMux:
        """A new event loop; `uvloop=True` runs on uvloop (needs the `[uvloop]` extra)."""
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
        """Wrap an existing loop, or the running one when `loop` is None."""
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
        """Run the loop until `Terminate()`."""
        if self._loop.is_running():
            raise RuntimeError("IIoMux.Run(): the loop is already running; await your app instead")
        self._loop.run_forever()

    def Terminate(self) -> None:
        """Stop the loop; `Run()` returns after the current iteration. Any thread may call it."""
        if self._loop.is_closed():
            return
        if self._loop.is_running() and threading.current_thread() is not _loop_thread(self._loop):
            self._loop.call_soon_threadsafe(self._loop.stop)
        else:
            self._loop.stop()

    def Close(self) -> None:
        """Close a loop made by `Create()` (beyond the SDK: frees its resources)."""
        if self._owns_loop and not self._loop.is_closed():
            self._loop.close()


def _loop_thread(loop: asyncio.AbstractEventLoop) -> threading.Thread | None:
    # asyncio stores the running thread id; uvloop does not expose it. Comparing with the
    # running loop of the current thread tells the same.
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return threading.current_thread() if running is loop else None


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
        check_loop_thread(self._iomux.loop, "ITimer.Start")
        self.Cancel()
        self._handle = self._iomux.loop.call_later(max(0, ms) / 1000.0, self._fire)

    def Cancel(self) -> None:
        """Stop the timer; no `TimerOnTimeout` follows."""
        check_loop_thread(self._iomux.loop, "ITimer.Cancel")
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def IsRunning(self) -> bool:
        """True between `Start` and the timeout (or `Cancel`)."""
        check_loop_thread(self._iomux.loop, "ITimer.IsRunning")
        return self._handle is not None

    def _fire(self) -> None:
        self._handle = None
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
