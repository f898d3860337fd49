"""What every socket kind shares: the states and the state machine, the callback
wrapper and the event entry, the deferral queue and the end.

Theory of operation
-------------------
`SocketBase` is the root of `StreamSocket` (TCP, local, TLS), `UDPSocket` and
`DTLSSocket`, and their only base: an `ISocket` by registration, and the protocol of
its transport by its methods alone (see the class). A kind says what differs with
class attributes: `TRANSITIONS` (its table of legal moves, made by `transitions`),
`LOG_FLAG` and `KIND` (the prefix of its log lines), and with hooks: `_illegal` words
a wrong move for the kind, `_release` lets go of what the kind holds, `_run_due_held`
hands held data to pending Recvs, `_start_listen`, `_parse_connect` and `_qos_socket`
(the OS socket `SetQoS` marks).

States. Every change of state goes through `_set_state`, which checks the kind's table
(an illegal move raises `SocketModeError`) and logs the move.

Events and callbacks. `_event(fn, *args)` is the one entry of a loop event (a
transport's, a task's, a timer's, a replayed callback): it runs `fn` with `_in_event`
set and, once `fn` returns, delivers what fell due meanwhile. `_callback` calls the user
(the callback looked up on the user when due) and `_raised` is the one place a raising
callback is reported to the loop's exception handler; the socket carries on. Only the
per-read event of a stream and the per-datagram event of UDP set `_in_event` and call
the user themselves, for the figure beside `_event`.

The deferral. A result that completes inside an app call (a `Send` the kernel took, a
`Recv` that held data can fill, `RecvCancel`, an early failure) never runs inside it: it
is queued on the socket (`_push`, `_emit`), in the order the calls made it, and `_run_due`
delivers the queue at the end of the current event or, for an app call made outside
every event of the socket, from the IIoMux's deferred batch (`_iomux._Deferred`, one
scheduled callback for every due socket). The queue holds callbacks by name, `HELD` (the
kind hands held data to Recvs then) and the end; its fast path, a counter of the send
results at its tail (`_send_due`), keeps a `Send` from touching the deque (figure beside
`_push`). Stream, UDP and DTLS sockets all use it.

The end. `_end(reason)` is the one place a socket ends: CLOSED, its task and timers
cancelled and its resources released (`_release`), the sends still in the transport
forgotten, and exactly one `SocketShutdown` queued behind what is due, after which
nothing more is delivered. Its silent form is for a socket whose connection another
takes over (`UpgradeToTLSSocket`), and, through `_abandon`, for one the app never got
(a denied connection, a failed upgrade). `Delete` releases the socket at once, with no
callback ever again.

The user. `_set_user` is the one place a socket takes a user. The user receives every
callback it has, however it has it (a method of its class, also one added later, a
function set on the instance, a mock's, one `__getattr__` forwards): `_callback` looks
the callback up on the user when it is due. Only `SocketSendResult` is decided ahead
(`_w_send`, by `writes`, on the user itself): a `Send` for a user without one leaves
nothing due, which keeps the plain echo's speed; it is looked at again when the socket
opens and before each callback of the slow path (`_recheck_send`), and at `SetUser`. A socket
made with user None has a `HeldCallbacks` recorder as its user until `SetUser` names one;
then `_replay_held` delivers what was recorded, in order, from the loop.

Only slow paths and what every kind does alike live here; each kind keeps its per-event
methods (receive, send) to itself, so no event pays for an extra call. Every socket the
library made stays in the mux layer's `LIVE` until the app deletes it, so the app need
keep no reference; the thread check of every call is the mux's too (`IIoMux.on_loop`).
"""

from __future__ import annotations

import asyncio
import enum
import socket
from _thread import RLock
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ._address import AddressError, parse_address
from ._api import ISocket, USocket
from ._iomux import LIVE as LIVE
from ._types import QOS_DSCP, QosTrafficType, ShutdownReason, SocketModeError

try:
    from mypy_extensions import mypyc_attr as mypyc_attr
except ImportError:  # plain Python without mypy installed: the decorator does nothing

    def mypyc_attr(*args: object, **kwargs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls


if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

is_owned: Final[Callable[[Any], bool]] = RLock.__dict__["_is_owned"]
"""`RLock._is_owned`: `is_owned(sock._owner)` is the thread check of every call (see
`_iomux`). Called as a module constant, the compiled build skips the method look-up of
`sock._owner._is_owned()` (pure Python costs the same either way, 180-190 Ir)."""


OPTIONAL_CALLBACKS: Final = (
    "SocketConnectComplete",
    "SocketBindResult",
    "SocketListenResult",
    "SocketAcceptComplete",
    "SocketSendResult",
    "SocketRecvCanceled",
    "SocketUpgradeToTLSComplete",
    "SocketAcceptSelectedALPNProtocol",
)
"""The callbacks a user may leave unwritten (`SocketRecvResult` and
`SocketRecvFromResult` are always called: an app that calls `Recv` writes them;
`SocketShutdown` is abstract). Not written, `SocketListenResult` denies every connection
and `SocketAcceptSelectedALPNProtocol` accepts the protocol, as the defaults do."""


def writes(user: object, name: str) -> bool:
    """Does `user` have the callback `name`, however it has it: a method of its class
    (added before or after its first socket), a function set on the instance, a
    `unittest.mock.Mock`'s attribute, a name `__getattr__`/`__getattribute__` forwards?
    Looked up on the user itself, as a call would; `USocket`'s own default (which does
    nothing) is no callback."""
    try:
        fn = getattr(user, name)
    except Exception:  # AttributeError, or whatever a forwarding __getattr__ raises
        return False
    if fn is None:
        return False
    default = getattr(USocket, name, None)
    return fn is not default and getattr(fn, "__func__", None) is not default


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


class S:
    """The states as plain class attributes, for the hot paths: looking one up here is a
    dict hit, while an Enum class attribute costs a descriptor call, about ten times as
    long, and a request compares states several times."""

    IDLE: Final = State.IDLE
    CONNECTING: Final = State.CONNECTING
    ACCEPTING: Final = State.ACCEPTING
    CONNECTED: Final = State.CONNECTED
    BINDING: Final = State.BINDING
    BOUND: Final = State.BOUND
    LISTENING: Final = State.LISTENING
    CLOSING: Final = State.CLOSING
    CLOSED: Final = State.CLOSED
    DELETED: Final = State.DELETED


ENDED = (S.CLOSED, S.DELETED)


def transitions(moves: Mapping[State, tuple[State, ...]]) -> dict[State, frozenset[State]]:
    """A kind's table of legal moves from the moves of its live states: each of them
    may also end (CLOSED) or be deleted; CLOSED may only be deleted, DELETED is final."""
    table = {st: frozenset((*nxt, S.CLOSED, S.DELETED)) for st, nxt in moves.items()}
    table[S.CLOSED] = frozenset((S.DELETED,))
    table[S.DELETED] = frozenset()
    return table


def as_view(buf: Any, what: str) -> memoryview:
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"{what}: buf must be bytes, bytearray or memoryview, not {type(buf).__name__}"
        ) from None
    if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
        mv = mv.cast("B")
    return mv


def current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None


def set_qos(sock: socket.socket, traffic: QosTrafficType) -> None:
    """Mark outgoing packets of `sock` with the DSCP of `traffic` (IP_TOS / IPV6_TCLASS =
    DSCP << 2): 0 for QOS_BEST_EFFORT, AF41 (34) for QOS_AUDIO_VIDEO, EF (46) for QOS_VOICE.

    Raises:
        OSError: the kernel refused.
    """
    tos = QOS_DSCP[traffic] << 2
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        try:  # a dual-stack socket carries IPv4 too
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        except OSError:
            pass
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


def check_user(user: object) -> None:
    """A socket needs a user to call back: raise at once when there is none."""
    if user is None or not callable(getattr(user, "SocketShutdown", None)):
        raise TypeError(
            "CreateSocket needs a USocket (a subclass implementing SocketShutdown) as user"
        )


class HeldCallbacks:
    """The user of a socket made with user None: it records each callback, in order,
    until `SetUser` names the user to deliver them to (`SocketBase._replay_held`).
    A listening socket without a user denies the connections that come meanwhile
    (`Accept` is only possible inside `SocketListenResult`)."""

    __slots__ = ("calls", "target")

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.target: Any = None

    def SocketConnectComplete(self, socket: Any) -> None:
        self.calls.append(("SocketConnectComplete", ()))

    def SocketBindResult(self, socket: Any, localAddr: str, localPort: int) -> None:
        self.calls.append(("SocketBindResult", (localAddr, localPort)))

    def SocketListenResult(self, socket: Any, remoteAddr: str, remotePort: int) -> None:
        """Nobody to accept it: the connection is denied."""

    def SocketAcceptComplete(self, socket: Any) -> None:
        self.calls.append(("SocketAcceptComplete", ()))

    def SocketShutdown(self, socket: Any, reason: ShutdownReason) -> None:
        self.calls.append(("SocketShutdown", (reason,)))

    def SocketSendResult(self, socket: Any) -> None:
        self.calls.append(("SocketSendResult", ()))

    def SocketRecvResult(self, socket: Any, buf: Any, len: int) -> None:
        self.calls.append(("SocketRecvResult", (buf, len)))

    def SocketRecvFromResult(
        self, socket: Any, buf: Any, len: int, srcAddr: Any, srcPort: int
    ) -> None:
        self.calls.append(("SocketRecvFromResult", (buf, len, srcAddr, srcPort)))

    def SocketRecvCanceled(self, socket: Any, buf: Any) -> None:
        self.calls.append(("SocketRecvCanceled", (buf,)))

    def SocketUpgradeToTLSComplete(self, socket: Any) -> None:
        self.calls.append(("SocketUpgradeToTLSComplete", ()))

    def SocketAcceptSelectedALPNProtocol(self, socket: Any, protocol: str) -> bool:
        """Accepted (the default); the user hears of it later, its answer unused."""
        self.calls.append(("SocketAcceptSelectedALPNProtocol", (protocol,)))
        return True


_END: Final = "SocketShutdown"
_SENT: Final[tuple[str, tuple[Any, ...]]] = ("SocketSendResult", ())
"""The queue entry of one send result (one shared tuple: queueing it allocates nothing)."""
HELD: Final[tuple[str, tuple[Any, ...]]] = ("", ())
"""The queue entry that hands held data to the pending Recvs (the kind's `_run_due_held`)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # DTLS sockets stay Python
class SocketBase:
    """The fields and slow-path helpers every socket kind shares: the user, the state
    machine, the callback wrapper, the event entry, the deferral queue and the end.

    An `ISocket` by registration (`ISocket.register`, below), not by inheritance: a
    compiled class with a base that is not compiled (`ISocket`, an `abc.ABC`; asyncio's
    protocol classes) gets an instance `__dict__` from mypyc, and the interpreter does
    not specialize a method call on an object with one (CPython 3.11: `LOAD_METHOD`
    stays adaptive, each `socket.Send(...)` of the app looks the method up anew). So
    every socket class has only compiled bases and no `__dict__`, and answers
    `isinstance(sock, ISocket)` as registered. (The pure build, where a class with
    `__slots__` has no `__dict__` whatever its bases, gives the stream sockets asyncio's
    `BufferedProtocol` back: see the end of `_stream`.) Ir per 1 KiB request, compiled
    (python -m benchmarks.callgrind), with those bases / without: tcp uvloop plain
    5,139 / 4,863, flow 5,810 / 5,534; local uvloop plain 5,143 / 4,866; tcp asyncio
    plain 21,660 / 21,475 (its transport calls the socket's `_Events`); udp uvloop
    13,957 / 13,827, asyncio 30,581 / 30,247 (asyncio's own look-ups of the socket's
    events specialize too). What `ISocket` itself defines beyond its abstract methods
    is here too (`SendTo`, `GetSrtpProfile`, `GetSrtpKeys`); where a transport needs an
    asyncio class for its protocol, it gets an adapter (`_stream._Events`)."""

    __slots__ = (
        "__weakref__",
        "_blocked",
        "_due",
        "_in_event",
        "_listen_wanted",
        "_local",
        "_log",
        "_loop",
        "_mux",
        "_owner",
        "_qos",
        "_queue",
        "_queued",
        "_send_due",
        "_state",
        "_task",
        "_unreported",
        "_use_ipv6",
        "_user",
        "_w_send",
    )

    TRANSITIONS: ClassVar[Mapping[State, frozenset[State]]]
    LOG_FLAG: ClassVar[int]
    KIND: ClassVar[str]

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool
    ) -> None:
        self._mux = iomux
        self._loop = iomux.loop
        # owned by the thread that runs the loop (the mux's lock, see `_iomux`)
        self._owner: Any = iomux._owner
        self._user: Any = None
        self._w_send = False
        self._set_user(user)
        self._log = log
        self._use_ipv6 = useIPv6
        self._state = S.IDLE
        self._task: asyncio.Task[None] | None = None
        self._qos: QosTrafficType | None = None
        self._local: tuple[str, int] = ("", 0)
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        # False only while `_queue` is empty (a native test for the per-read path; True
        # with an empty queue only sends that path to `_run_due`)
        self._queued = False
        self._send_due = self._unreported = 0
        self._blocked = self._due = self._in_event = self._listen_wanted = False
        LIVE.add(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.value} {self._local[0]}:{self._local[1]}>"

    # ------------------------------------------------------------------ state machine

    def _set_state(self, new: State) -> None:
        old = self._state
        if new not in self.TRANSITIONS[old]:
            if old is S.DELETED:
                raise SocketModeError(
                    "the socket was deleted; make a new one with the provider's CreateSocket"
                )
            raise SocketModeError(self._illegal(old, new))
        self._state = new
        if self._log.LogFlagSet(self.LOG_FLAG):
            self._log.Log(
                self.LOG_FLAG, "%s %x: %s -> %s", self.KIND, id(self), old.value, new.value
            )

    def _illegal(self, old: State, new: State) -> str:
        """Hook: the sentence for a move the table forbids (what to do instead; a
        deleted socket's is `_set_state`'s). A method, not a static one: the compiled
        build calls a static method of the base without looking at the kind."""
        return f"a socket that is {old.value} cannot become {new.value}"

    def _check_thread(self, call: str) -> None:
        """Raise `SocketModeError` when `call` comes from a thread other than the one
        running the socket's loop. Every public call makes this check, inside callbacks
        too: the calling thread owns the mux's lock (`_owner._is_owned()`, see `_iomux`;
        `IIoMux.on_loop` decides when it does not; the per-request calls write it out)."""
        if not is_owned(self._owner):
            self._mux.on_loop(call)

    def _check_alive(self, call: str) -> None:
        if not is_owned(self._owner):
            self._mux.on_loop(call)
        if self._state is S.DELETED:
            raise SocketModeError(f"{call} after Delete(): the socket is gone; make a new one")

    def _fail_log(self, what: str, detail: object) -> None:
        self._log.Log(self.LOG_FLAG, "%s %x: %s: %s", self.KIND, id(self), what, detail)

    # ------------------------------------------------------------------ callbacks

    def _set_user(self, user: Any) -> None:
        """Make `user` the socket's user, and look at the user itself (`writes`: its
        class now, its instance, a mock, a forwarding `__getattr__`) for whether it has
        `SocketSendResult` (`_w_send`)."""
        self._user = user
        self._w_send = user is not None and writes(user, "SocketSendResult")

    def _recheck_send(self) -> None:
        """Look again whether the user has `SocketSendResult` (`_set_user`'s decision,
        made when the socket took it): when the socket opens, and before each callback
        of the slow path, so that one the app sets later, on the instance or on the
        class, counts from then on."""
        user = self._user
        if user is not None:
            self._w_send = writes(user, "SocketSendResult")

    def _callback(self, name: str, *args: Any) -> Any:
        """Call the user's `name`, looked up on the user now, as the app wrote it
        (class, instance, mock, `__getattr__`); a user without it (or with `USocket`'s
        default, which does nothing) is not called. What the callback raises goes to the
        loop's exception handler (`_raised`) and the socket carries on."""
        try:
            fn = getattr(self._user, name)
        except AttributeError:
            return None
        except Exception as e:  # a forwarding __getattr__ that fails
            self._raised(name, e)
            return None
        if not self._w_send and name != "SocketSendResult":
            self._recheck_send()
        try:
            return fn(self, *args)
        except Exception as e:
            self._raised(name, e)
            return None

    def _raised(self, name: str, exc: Exception) -> None:
        """The one place a raising user callback is reported: the loop's exception
        handler gets the exception and the socket (the per-event paths that call the
        user directly report here too)."""
        self._loop.call_exception_handler(
            {
                "message": f"exception in {type(self._user).__name__}.{name}",
                "exception": exc,
                "socket": self,
            }
        )

    # The per-read event of a stream socket and the per-datagram event of a UDP socket
    # set `_in_event` and call the user themselves (reporting through `_raised`), not
    # through `_event` and `_callback`. Ir per 1 KiB request (python -m
    # benchmarks.callgrind --kinds tcp), written out / through `_event(_callback, ...)`:
    # plain echo: pure asyncio 31,131 / 35,412, pure uvloop 12,675 / 17,015, compiled
    # uvloop 8,831 / 11,404; flow echo: pure asyncio 32,602 / 40,176, pure uvloop
    # 14,145 / 21,768, compiled uvloop 9,551 / 13,396. (callgrind has no UDP cell; the
    # datagram event has the same shape.) Every other event goes through `_event`.

    def _event(self, fn: Callable[..., Any], *args: Any) -> None:
        """The one entry of a loop event (a transport's, a task's, a timer's, a replayed
        callback): `fn(*args)` runs as the socket's own event (`_in_event`), and what
        fell due in it is delivered right after it (`_run_due`). Inside an event it
        just runs `fn`; for a deleted socket nothing runs. (The per-datagram and
        per-read paths of UDP and streams set `_in_event` themselves, see there.)"""
        if self._state is S.DELETED:
            return
        if self._in_event:
            fn(*args)
            return
        self._in_event = True
        try:
            fn(*args)
        finally:
            self._in_event = False
        if self._due:
            self._run_due()

    # ------------------------------------------------------------------ the deferral

    # The queue's fast path: `_send_due` counts the send results at its tail (after
    # every entry of `_queue`), so that a Send adds 1 and the per-read event of a stream
    # delivers "one send result due, nothing else queued" without touching the deque.
    # Ir per 1 KiB request of the flow echo (python -m benchmarks.callgrind --kinds tcp
    # --impls usocket-flow,compiled-flow), with the counter / with a send result as a
    # deque entry like the others: pure uvloop 14,145 / 15,055, compiled asyncio
    # 29,016 / 33,465, compiled uvloop 9,551 / 13,921 (the counter pays).
    # Any other entry first moves the counted results into the deque, so that the
    # order stays the order of the calls.

    def _push(self, entry: tuple[str, tuple[Any, ...]]) -> None:
        """Queue one callback (name and arguments) behind everything queued before: it
        runs at the end of the current event or, inside an app call made outside every
        event of this socket, from the IIoMux's deferred batch."""
        q = self._queue
        n = self._send_due
        if n:
            self._send_due = 0
            for _ in range(n):
                q.append(_SENT)
        q.append(entry)
        self._queued = True
        if not self._due:
            self._due = True
            if not self._in_event:
                self._mux._deferred.add(self)

    def _push_sent(self, n: int) -> None:
        """Queue the results of `n` sends (counted: the fast path)."""
        self._send_due += n
        if not self._due:
            self._due = True
            if not self._in_event:
                self._mux._deferred.add(self)

    def _count_send(self) -> None:
        """One send was handed to the transport: its result is due now, or, while the
        transport holds bytes back (`_blocked`), once they left (`resume_writing`)."""
        if self._blocked:
            self._unreported += 1
        elif self._w_send:
            self._push_sent(1)

    def pause_writing(self) -> None:
        """(Stream and UDP transports.) Bytes stay in the transport: the sends made
        from now on complete at `resume_writing`."""
        self._blocked = True

    def resume_writing(self) -> None:
        """(Stream and UDP transports.) Every byte left for the kernel: the results of
        the sends held back are due (a user that writes no `SocketSendResult` hears
        nothing: they are simply done)."""
        self._blocked = False
        n = self._unreported
        if n:
            self._unreported = 0
            if self._w_send:
                self._event(self._push_sent, n)

    def _emit(self, name: str, *args: Any) -> None:
        """Queue the callback `name(*args)` (nothing once the socket has ended: its
        `SocketShutdown` is the last)."""
        st = self._state
        if st is S.CLOSED or st is S.DELETED:
            return
        self._push((name, args))

    def _run_due(self) -> None:
        """Deliver the queue, in the order it was filled (never inside an app call):
        callbacks, `HELD` (the kind hands held data to pending Recvs) and the end,
        after which nothing more is delivered. What the callbacks queue meanwhile
        follows in the same run."""
        if not self._due:
            return
        self._due = False
        if self._state is S.DELETED:
            return
        in_event = self._in_event
        self._in_event = True
        q = self._queue
        try:
            while True:
                if not q:
                    self._queued = False
                    if not self._send_due:
                        break
                    self._send_due -= 1
                    self._callback("SocketSendResult")
                    continue
                name, args = q.popleft()
                if not name:
                    self._run_due_held()
                elif name == _END:
                    q.clear()
                    self._queued = False
                    self._send_due = 0
                    self._callback(name, *args)
                    break
                else:
                    self._callback(name, *args)
        finally:
            self._in_event = in_event
            self._due = False

    def _run_due_held(self) -> None:
        """Hook for `HELD`: hand held data to the pending Recvs that can take it now
        (and whatever follows from that, such as the end after a peer's close)."""

    # ------------------------------------------------------------------ the end

    def _end(self, reason: ShutdownReason, silent: bool = False) -> None:
        """The one place a socket ends: CLOSED (through `_set_state`), its task and
        timers cancelled and its resources released (the kind's `_release`), sends
        still in the transport forgotten (they never reached the kernel), and exactly
        one `SocketShutdown(reason)` queued behind what is due: delivered at the end of
        the current event, or right after the current app call.

        `silent`: no callback and no log line, nothing queued is delivered and the user
        is dropped: for a socket whose connection another socket took over
        (`UpgradeToTLSSocket`) and, through `_abandon`, for one the app never got."""
        st = self._state
        if st is S.CLOSED or st is S.DELETED:
            return
        self._set_state(S.CLOSED)
        self._unreported = 0
        if silent:
            self._queue.clear()
            self._queued = False
            self._send_due = 0
            self._release()
            self._user = None
            return
        if reason > ShutdownReason.SOCKET_SHUTDOWN_BY_PEER or self._log.LogFlagSet(self.LOG_FLAG):
            self._log.Log(self.LOG_FLAG, "%s %x: shutdown %s", self.KIND, id(self), reason.name)
        self._release()
        self._push((_END, (reason,)))

    def _connect_target(self, address: str) -> Any:
        """What `Connect` does first on every kind: CONNECTING, then `address` parsed
        (`_parse_connect`); None when it is no address: the socket ends (later) with
        `SOCKET_ADDRESS_INVALID`.

        Raises:
            SocketModeError: deleted, or Bind/Connect was called before.
        """
        self._check_alive("Connect")
        self._set_state(S.CONNECTING)
        try:
            return self._parse_connect(address)
        except AddressError as e:
            self._fail_log("Connect: address invalid", e)
            self._end(ShutdownReason.SOCKET_ADDRESS_INVALID)
            return None

    def _parse_connect(self, address: str) -> Any:
        """Hook: the target of `Connect(address)` ("host:port" here; a local socket's is
        a path).

        Raises:
            AddressError: `address` is no address.
        """
        return parse_address(address, need_port=True)

    def _recv_ignored(self, st: State) -> bool:
        """A `Recv` that finds the socket in `st` and takes no buffer: True once it is
        shutting down or closed (ignored).

        Raises:
            SocketModeError: the socket is deleted.
        """
        if st is S.CLOSING or st is S.CLOSED:
            return True
        if st is S.DELETED:
            self._check_alive("Recv")
        return False

    def _open_failed(self, reason: ShutdownReason, what: str, detail: object) -> None:
        """Opening failed (an event: a task's or a transport's): log why, then end."""
        self._fail_log(what, detail)
        self._end(reason)

    def _abandon(self) -> None:
        """Forget a socket the app never got (a denied connection, a failed upgrade):
        it ends silently (`_end`) and is deleted at once, with no callback."""
        self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL, silent=True)
        if self._state is not S.DELETED:
            self._set_state(S.DELETED)
            self._forget()

    def _release(self) -> None:
        """Hook: cancel the task and timers, drop buffers, close the transport."""
        raise NotImplementedError

    def _forget(self) -> None:
        """A deleted socket: nothing queued, no user, not held by the library any more."""
        self._queue.clear()
        self._queued = False
        self._send_due = self._unreported = 0
        self._due = False
        self._user = None
        LIVE.discard(self)

    def _cancel_task(self) -> asyncio.Task[None] | None:
        """Cancel the socket's task (unless it is the one running this) and forget it;
        returns it (None when there was none)."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not current_task(self._loop):
            task.cancel()
        return task

    # ------------------------------------------------------------------ ISocket: the rest

    def Listen(self) -> None:
        """Accept connections (DTLS: peers) on the bound address: `SocketListenResult`
        for each, or `SocketShutdown(SOCKET_LISTEN_FAILED)`. Called while `Bind` is in
        progress, it starts once the socket is bound.

        Raises:
            SocketModeError: the socket is not bound (call `Bind` first), or it listens.
        """
        self._check_alive("Listen")
        if self._state is S.BINDING and not self._listen_wanted:
            self._listen_wanted = True
        elif self._state is S.BOUND:
            self._start_listen()
        else:
            raise SocketModeError(self._illegal(self._state, S.LISTENING))

    def _start_listen(self) -> None:
        """Hook: the bound socket starts listening."""
        raise NotImplementedError

    def Delete(self) -> None:
        """Release the socket at once: it closes and makes no callback, ever again."""
        self._check_alive("Delete")
        self._set_state(S.DELETED)
        self._release()
        self._forget()

    def SetUser(self, user: USocket) -> None:
        """Send this socket's callbacks to `user` from now on.

        Raises:
            TypeError: `user` is None (or no `USocket`): a socket always has a user; to
                hear nothing more, `Delete()` the socket instead.
        """
        self._check_alive("SetUser")
        if user is None or not callable(getattr(user, "SocketShutdown", None)):
            raise TypeError(
                "SetUser needs a USocket (a subclass implementing SocketShutdown); to stop "
                "the callbacks, Delete() the socket instead"
            )
        held = self._user
        if isinstance(held, HeldCallbacks):
            # made with user None: what it held goes to `user` first, from the loop (no
            # callback inside this call); until then new callbacks are held behind it
            if held.target is None:
                self._loop.call_soon(self._replay_held)
            held.target = user
            return
        self._set_user(user)

    def _replay_held(self) -> None:
        """Deliver the callbacks held for a socket made with user None to the user
        `SetUser` named, in order; from now on they go to it directly."""
        held = self._user
        if not isinstance(held, HeldCallbacks) or held.target is None:
            return  # deleted meanwhile
        self._set_user(held.target)
        for name, args in held.calls:
            if self._state is S.DELETED or self._user is None:
                break
            self._replay_one(name, args)
        held.calls = []

    def _replay_one(self, name: str, args: tuple[Any, ...]) -> None:
        """Deliver one held callback as an event: what the app's calls in it complete
        follows it."""
        self._event(self._callback, name, *args)

    def SendTo(self, buf: Any, len: int | None, dstAddr: Any, dstPort: Any) -> None:
        """UDP's: ignored on the other kinds (after the thread check every call makes)."""
        self._check_thread("SendTo")

    def GetSrtpProfile(self) -> str | None:
        """DTLS-SRTP's (`ISocket.GetSrtpProfile`): None here; DTLS sockets say."""
        return None

    def GetSrtpKeys(self) -> bytes | None:
        """DTLS-SRTP's (`ISocket.GetSrtpKeys`): None here; DTLS sockets say."""
        return None

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
        try:
            self._qos = QosTrafficType(traffic)
        except ValueError:
            raise ValueError(
                f"SetQoS({traffic!r}): pass a QosTrafficType, the SDK's values "
                "QOS_BEST_EFFORT=0, QOS_AUDIO_VIDEO=1 or QOS_VOICE=2 (the DSCP is the library's)"
            ) from None
        self._apply_qos()

    def _apply_qos(self) -> None:
        sock = self._qos_socket()
        if sock is None or self._qos is None:
            return
        try:
            set_qos(sock, self._qos)
        except OSError as e:
            self._fail_log("SetQoS failed", e)

    def _qos_socket(self) -> socket.socket | None:
        """Hook: the OS socket `SetQoS` marks (None while there is none)."""
        raise NotImplementedError


# Every socket kind is an `ISocket` (`isinstance`, `issubclass`) without inheriting it:
# see `SocketBase`.
ISocket.register(SocketBase)
