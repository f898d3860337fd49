"""What every socket kind shares: the states, the state machine's helpers, the callback
wrapper and the calls that only read or set a field.

Theory of operation
-------------------
`SocketBase` is the root of `StreamSocket` (TCP, local, TLS), `UDPSocket` and
`DTLSSocket`. A kind says what differs with class attributes: `TRANSITIONS` (its table
of legal moves), `LOG_FLAG` and `KIND` (the prefix of its log lines), and with small
hooks (`_illegal` words a wrong move for the kind, `_apply_qos` marks its OS socket).
Only slow paths live here; each kind keeps its per-event methods (receive, send) to
itself, so no event pays for an extra call.

Every socket the library made stays in `_LIVE` until the app deletes it, so the app
need keep no reference.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ._api import ISocket, USocket
from ._types import QosTrafficType, SocketModeError

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

# Every socket the library made, until the app deletes it (the app need keep no reference).
_LIVE: set[ISocket] = set()


class State(enum.Enum):
    """The life of a socket. Each kind's legal moves are in its `TRANSITIONS`."""

    IDLE = "idle"
    CONNECTING = "connecting"
    ACCEPTING = "accepting"
    CONNECTED = "connected"
    BINDING = "binding"
    BOUND = "bound"
    LISTENING = "listening"
    CLOSING = "closing"
    CLOSED = "closed"
    DELETED = "deleted"


S = State
_ENDED = (S.CLOSED, S.DELETED)


def _as_view(buf: Any, what: str) -> memoryview:
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"{what}: buf must be bytes, bytearray or memoryview, not {type(buf).__name__}"
        ) from None
    if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
        mv = mv.cast("B")
    return mv


def _current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None


def check_user(user: object) -> None:
    """A socket needs a user to call back: raise at once when there is none."""
    if user is None or not callable(getattr(user, "SocketShutdown", None)):
        raise TypeError(
            "CreateSocket needs a USocket (a subclass implementing SocketShutdown) as user"
        )


class SocketBase(ISocket):
    """The fields and slow-path helpers every socket kind shares."""

    __slots__ = (
        "__weakref__",
        "_due",
        "_in_event",
        "_local",
        "_log",
        "_loop",
        "_mux",
        "_qos",
        "_state",
        "_task",
        "_use_ipv6",
        "_user",
    )

    TRANSITIONS: ClassVar[Mapping[State, frozenset[State]]]
    LOG_FLAG: ClassVar[int]
    KIND: ClassVar[str]

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool
    ) -> None:
        self._mux = iomux
        self._loop = iomux.loop
        self._user: Any = user
        self._log = log
        self._use_ipv6 = useIPv6
        self._state = S.IDLE
        self._task: asyncio.Task[None] | None = None
        self._qos: QosTrafficType | None = None
        self._local: tuple[str, int] = ("", 0)
        self._due = False
        self._in_event = False

    # ------------------------------------------------------------------ state machine

    def _set_state(self, new: State) -> None:
        old = self._state
        if new not in self.TRANSITIONS[old]:
            raise SocketModeError(self._illegal(old, new))
        self._state = new
        if self._log.LogFlagSet(self.LOG_FLAG):
            self._log.Log(
                self.LOG_FLAG, "%s %x: %s -> %s", self.KIND, id(self), old.value, new.value
            )

    @staticmethod
    def _illegal(old: State, new: State) -> str:
        """Hook: the sentence for a move the table forbids (what to do instead)."""
        if old is S.DELETED:
            return "the socket was deleted; make a new one with the provider's CreateSocket"
        return f"a socket that is {old.value} cannot become {new.value}"

    def _check_alive(self, call: str) -> None:
        if self._state is S.DELETED:
            raise SocketModeError(f"{call} after Delete(): the socket is gone; make a new one")

    def _fail_log(self, what: str, detail: object) -> None:
        self._log.Log(self.LOG_FLAG, "%s %x: %s: %s", self.KIND, id(self), what, detail)

    # ------------------------------------------------------------------ callbacks

    def _callback(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._user, name)(self, *args)
        except Exception as e:
            self._loop.call_exception_handler(
                {
                    "message": f"exception in {type(self._user).__name__}.{name}",
                    "exception": e,
                    "socket": self,
                }
            )
            return None

    # ------------------------------------------------------------------ the end

    def _cancel_task(self) -> asyncio.Task[None] | None:
        """Cancel the socket's task (unless it is the one running this) and forget it;
        returns it (None when there was none)."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not _current_task(self._loop):
            task.cancel()
        return task

    # ------------------------------------------------------------------ ISocket: the rest

    def SetUser(self, user: USocket) -> None:
        """Send this socket's callbacks to `user` from now on."""
        self._check_alive("SetUser")
        self._user = user

    def GetLocalAddress(self) -> tuple[str, int]:
        """The local address and port ("" and 0 until Bind/Connect completed; for a
        DTLS listener's peers, the shared UDP endpoint's)."""
        self._check_alive("GetLocalAddress")
        return self._local

    def SetQoS(self, traffic: QosTrafficType) -> None:
        """Mark outgoing packets with the DSCP of `traffic` (IP_TOS / IPV6_TCLASS); set
        before Bind/Connect, it applies once the socket is open (for a DTLS listener's
        peers: the shared endpoint's)."""
        self._check_alive("SetQoS")
        self._qos = QosTrafficType(traffic)
        self._apply_qos()

    def _apply_qos(self) -> None:
        """Hook: set `self._qos` on the OS socket, if there is one yet."""
        raise NotImplementedError
