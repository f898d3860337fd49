"""The stream engine: one buffered-protocol bridge shared by TCP, local and TLS sockets.

Theory of operation
-------------------
A `StreamSocket` is both the app's `ISocket` and the buffered protocol of its transport,
so an event from the transport reaches the app's callback with no hop in between. It
derives from no asyncio class (see `SocketBase`: no instance `__dict__`): uvloop's
transports and SSL layer take the socket itself (they look for a `get_buffer`); asyncio's,
which ask for an `asyncio.BufferedProtocol`, get its `_Events`, whose slots hold the
socket's bound methods (`_as_protocol` chooses; in the pure build the socket is an
`asyncio.BufferedProtocol` itself, see the end of this module).

Receiving. The app's pending `Recv` buffers form a queue; the head is kept in plain
attributes. The buffer a `SocketRecvResult` gets is the app's from that moment: it may
resize it inside the callback. So the transport is handed the app's buffer only where it
lets go of it before `buffer_updated` (asyncio's plain socket transport, which reads with
`recv_into` and keeps only a reference), and only the bytearray itself, filled from its
start (a view we made would stay exported while the callback runs): the kernel writes
straight into it. Everywhere else (uvloop, which holds a `Py_buffer` of what `get_buffer`
returned until `buffer_updated` returns; the SSL layers, which keep a view; a part of
the buffer) the transport reads into the loop's read area (`IIoMux._read_area`, one per
loop: a loop reads one socket at a time and the bytes are copied out at once) and
`buffer_updated` copies them into the buffer before the callback. (Figure beside
`_AREA`.) In the pure build a uvloop stream transport is handed `_AreaReader` as its
protocol: its `get_buffer` is a C callable that returns the read area (no Python frame
per read), and `buffer_updated` sorts each read out itself (the pending Recv, or the
hold). With the compiled helper, a transport that reads in place (asyncio's selector
transport, uvloop's TCP and Unix ones: `_direct.recv_target`) is handed a
`_fastsend.RecvTarget` instead: the part of the app's bytearray the head Recv still
wants, exported without an export of the bytearray, so the kernel writes into the app's
buffer on uvloop too and a resize inside the callback still works. When no
`Recv` is pending, bytes go to a fixed hold area; once `HOLD_LIMIT` bytes are held the
transport is paused, and it resumes when the app's `Recv` calls drain the hold. A peer
flooding a socket that never reads therefore costs at most `HOLD_LIMIT` bytes here.

Sending. `Send` writes at once (cached until connected). The transport's high-water mark
is 0, so it calls `pause_writing` as soon as anything stays in its buffer and
`resume_writing` once the buffer is empty again: a `Send` whose bytes all reached the
kernel is complete on return; the others complete at `resume_writing`. This makes
`SocketSendResult` exact and in order without per-send bookkeeping. While the transport
holds nothing, a TCP or local socket writes to the OS socket itself and hands only what
the kernel does not take to the transport (the direct path, `_direct.py`); the promise
is the same. (A TLS socket's transport is a writer that keeps the same promise for the
records, see `_tls.py`.)

Callbacks. Every transport event enters through `SocketBase._event` (the per-read one,
`buffer_updated`, sets `_in_event` itself and calls the user directly, for the figure
beside `_event`), so the app's callback runs with no hop in between. A result that
completes inside the app's own call (a `Send` the kernel took, a `Recv` that held bytes
can fill, `RecvCancel`, an early failure) goes to the socket's deferral queue, the one
of `_base` that UDP and DTLS use too: it is delivered in call order right after the
app's callback returns, or from the loop's batch when the call came from outside the
socket's events. A `Send` only counts its result (the queue's fast path), and the
flow-control echo (one `Send` in `SocketRecvResult`) gets its `SocketSendResult` from
the same event. The stream engine adds what its held bytes owe (`_run_due_held`, for
the queue's `HELD` entry) and what it releases (`_release`).

The end. `SocketBase._end(reason)` is the one place a socket ends: it moves to CLOSED,
cancels its task and timers, releases its buffers and transport, and queues the single
`SocketShutdown` behind what is due (delivered at the end of the current event, or right
after the app's call). A peer's EOF or a broken connection is only recorded while held
bytes wait for the app's `Recv`; the end follows once they are delivered (a pending exact
`Recv` first gets what there is, with a shorter length). Sends still in the transport
when a socket ends get no `SocketSendResult`. A connection handed to TLS
(`_hand_over`) ends the socket silently, and a connection the listener's app denied
never becomes the app's (`_abandon`).

Shutdown. CLOSING first sends every byte still in the transport (`_draining`), for as
long as the peer takes some: `_drain_check` looks at the transport's buffer every
quarter of `_stall_limit` and gives up (`SOCKET_LOST`, the transport aborted) only when
it has not shrunk for `_stall_limit` seconds. Once it is empty (`resume_writing`), our
close goes out (`_close_output`: FIN, or TLS `close_notify`) and the bounded wait for the
peer's begins. A connection lost while bytes were still to go is `SOCKET_LOST`.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import signal
import socket
import struct
from asyncio.protocols import BufferedProtocol  # (from its module: mypyc makes `_Events` so)
from collections import deque
from functools import partial
from itertools import repeat
from types import FunctionType as _FunctionType
from typing import TYPE_CHECKING, Any, ClassVar, Final

from . import _direct
from ._address import Address, AddressError, format_ip, parse_address
from ._api import Buffer, USocket
from ._base import ENDED, HELD, S, SocketBase, State, is_owned, mypyc_attr, transitions
from ._errors import (
    ACCEPT,
    BIND,
    CONNECT,
    LISTEN,
    LOST,
    OPEN,
    ConnectErrors,
    detail,
    reason_of,
    translate,
)
from ._types import LogFlags, ShutdownReason, SocketModeError

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog


HOLD_LIMIT = 64 * 1024
"""Bytes held for an app with no pending `Recv` before reading pauses."""

LISTEN_BACKLOG = max(128, getattr(socket, "SOMAXCONN", 128))
ACCEPT_BATCH = 64
"""Connections accepted per readiness event."""
ACCEPT_RETRY_DELAY = 0.2
"""Seconds the listener rests after running out of descriptors or memory."""
LINGER_TIMEOUT = 2.0
"""Seconds `Shutdown` waits for the peer's close after its last byte and its own close
went to the kernel."""
STALL_TIMEOUT = 10.0
"""Seconds `Shutdown` keeps sending to a peer that takes nothing; then the socket gives up
on the bytes still unsent and ends with `SOCKET_LOST`. (Each socket reads it when it is
made, into `_stall_limit`.)"""

_CONNECTED: Final = State.CONNECTED
"""For the per-request paths: a module constant is one lookup (`S.CONNECTED` two)."""
_NOSIGNAL: Final = _direct.NOSIGNAL
_FAST: Final = _direct.FAST
"""The direct path's compiled helper is there: it sends part of a buffer without a slice."""
_len: Final = builtins.len
"""`len` for the pure fast path of `Send`, whose parameter of that name hides it (one
lookup; mypyc compiles `builtins.len` itself into its own fast op, not this)."""
_os_write: Final = os.write
_VIEW_FROM: Final = 8192
"""From this many bytes the pure build's direct `Send` writes a part of a bytearray
through a view of it instead of a copy (`buf[:len]`): the view and its slice cost about
940 Ir, the copy an allocation and about one instruction per byte under callgrind
(glibc's `rep movsb`), 65,536 per request in a 64 KiB echo. Ir per request, tcp plain
echo (python -m benchmarks.callgrind, pure): 64 KiB asyncio 93,811 -> 29,273, uvloop
214,028 -> 149,325 (that cell moves between runs with how the reads split; the copy's
65,483 are gone); 1 KiB pays the size test, +51 uvloop, +53 asyncio. The view lives only
inside `Send`: a part the kernel does not take is copied for the transport
(`_direct_rest`)."""
_SIGPIPE: Final = getattr(signal, "SIGPIPE", None)


def _write_fd_ok() -> bool:
    """May the pure build's direct path use `os.write` (a new connection asks)?

    `os.write` costs 475 Ir less per 1 KiB send than `socket.send(data, MSG_NOSIGNAL)`
    (whose arguments go through a tuple and a format string), but cannot say
    MSG_NOSIGNAL: it is used only where a reset peer cannot raise SIGPIPE's default
    action, i.e. SIGPIPE is ignored (Python's own setting at start-up) or has a Python
    handler; then the write fails with EPIPE as `send` would. (Both loops' transports
    write without MSG_NOSIGNAL: they rely on the same setting. Elsewhere, and in the
    compiled build, whose helper passes MSG_NOSIGNAL, the sender's `send` is used.)"""
    if _SIGPIPE is None:
        return False  # no POSIX signals: no `os.write` on a socket either
    try:
        h = signal.getsignal(_SIGPIPE)
    except (ValueError, OSError):
        return False
    return h is signal.SIG_IGN or callable(h)


@mypyc_attr(native_class=False)  # a plain class: its slots are the transport's look-ups
class _Events(BufferedProtocol):
    """The protocol a transport gets in place of a stream socket where it must be an
    `asyncio.BufferedProtocol`: asyncio's socket transport reads with `get_buffer` only
    for one (`isinstance`, else it calls `data_received`), and so does asyncio's SSL
    layer for its app protocol. The socket itself is none (see `SocketBase`: a compiled
    class with that base would get an instance `__dict__`), so it gets this: each event
    is the socket's own bound method, kept in a slot, and the transport calls it with
    no frame in between. uvloop's stream transports and SSL layer take any object with
    a `get_buffer` that is no `asyncio.Protocol`: there the socket is the protocol
    itself (`StreamSocket._as_protocol`), and the compiled build's events pay nothing;
    so it is in the pure build, whose sockets are `asyncio.BufferedProtocol`s (the end
    of this module). A datagram transport tests nothing: a UDP socket is always its own
    protocol.

    Per event this costs the interpreter's generic look-up of a slot (about 160 Ir)
    where a method of the socket's class would be a specialized call; for the compiled
    build that look-up was generic anyway (its instance `__dict__`)."""

    __slots__ = (
        "buffer_updated",
        "connection_lost",
        "connection_made",
        "eof_received",
        "get_buffer",
        "pause_writing",
        "resume_writing",
        "sock",
    )

    # (the slots hold the socket's bound methods, in place of the base's methods)
    buffer_updated: Any
    connection_lost: Any
    connection_made: Any
    eof_received: Any
    get_buffer: Any
    pause_writing: Any
    resume_writing: Any

    def __init__(self, sock: StreamSocket, get_buffer: Any = None) -> None:
        self.sock = sock
        self.get_buffer = sock.get_buffer if get_buffer is None else get_buffer
        self.buffer_updated = sock.buffer_updated
        self.connection_made = sock.connection_made
        self.connection_lost = sock.connection_lost
        self.eof_received = sock.eof_received
        self.pause_writing = sock.pause_writing
        self.resume_writing = sock.resume_writing

    def __repr__(self) -> str:
        return f"<events of {self.sock!r}>"


@mypyc_attr(native_class=False)
class _AreaReader(_Events):
    """The protocol a uvloop stream transport gets in the pure build: its `get_buffer`
    is a C callable that returns the loop's read area (the pure build copies every read
    out of it on uvloop anyway, see `_AREA`), so no read pays a Python frame for it;
    every other event is the socket's own method (uvloop takes them from here: bound
    methods, no frame in between). With it, the socket's `_into` stays `_AREA`, and
    `buffer_updated` sends what no Recv takes to the hold (`_area_held`). Ir per 1 KiB
    request, pure uvloop tcp plain echo (python -m benchmarks.callgrind): 12,841 with
    `get_buffer`, 12,426 with a dict's `__getitem__` (the size, a new int at each read,
    compared with the key), 12,336 with this."""

    __slots__ = ()

    def __init__(self, sock: StreamSocket) -> None:
        # `get_buffer(size)` is `next(repeat(area), size)`: the area, whatever the size,
        # all in C (a dict keyed by the size compares a new int object at each read)
        super().__init__(sock, partial(next, repeat(sock._area)))


def _owned(data: Any, start: int, end: int) -> Any:
    """A copy the socket may keep of `data[start:end]` (`end` -1: to the end), `data`
    being the app's buffer or a view of it: a slice of a bytearray is a new one already,
    a slice of a view is made bytes."""
    if start == 0 and end < 0:  # all of it: one copy, no slice
        return data.tobytes() if type(data) is memoryview else bytes(data)
    part = data[start:] if end < 0 else data[start:end]
    if type(part) is memoryview:
        return part.tobytes()
    return part


_HOLD: Final = 0
_USER: Final = 1
_AREA: Final = 2
"""What the transport reads into (`get_buffer`, then `buffer_updated`): the hold area,
the head Recv's buffer itself, or the loop's read area, copied into that buffer."""
# The copy out of the read area is what makes the buffer the app's on uvloop; it costs.
# Ir per 1 KiB request, uvloop plain echo (python -m benchmarks.callgrind --loop uvloop
# --impls usocket-plain,compiled-plain), pure / compiled: into the app's buffer (uvloop
# keeps it exported through the callback: BufferError on a resize) 12,743 / 8,835;
# `buf[pos:end] = area[:n]` (a temporary bytearray, two copies) 15,615 / 11,626 (with the
# thread check of that time); `_PACKS[n](buf, pos, area)` (one copy, nothing allocated:
# about 700 Ir of which the argument parsing is 280) 14,267 / 9,948 (with this version's
# thread check; 14,198 / 7,574 with the direct send of `Send`). A view of the area
# costs more: bytearray's slice assignment copies anything but a bytearray into a
# temporary first (16,927 pure). Asyncio's plain transport keeps the zero copy.
# A `data_received` path on uvloop (a plain `Protocol` whose events are the socket's
# methods, the bytes packed into the buffer) measured worse: 14,690 against 14,081 pure
# (with the direct send), the 1 KiB `bytes` uvloop makes for each read (malloc, copy,
# free) costing more than the `get_buffer` call it saves.
# The compiled build's `RecvTarget` (see the theory of operation) skips the copy where
# the transport reads in place: compiled uvloop plain 6,640 -> 6,206, flow 7,422 ->
# 6,981 (tcp).

_PACK_MAX: Final = 4096
_PACKS: Final[list[Any]] = [None] * (_PACK_MAX + 1)
"""`struct.Struct(f"{n}s").pack_into` for each read size n up to `_PACK_MAX`, made at
its first use: `pack(buf, pos, area)` puts the first n bytes of the read area at `pos`
in the app's buffer with one copy and no allocation (see `_AREA`)."""
_PACK_BUDGET: Final[list[int]] = [64]
"""How many more packs may be made: a process keeps at most 64 (about 10 KB), for the
read sizes it meets first; other sizes copy by a slice. (A peer that sends every size
from 1 to 4096 bytes would otherwise make the process keep 4096 packs, about 600 KB.)"""


def _pack_for(n: int) -> Any:
    """The pack of read size `n`, made now if the budget allows, else None."""
    if _PACK_BUDGET[0] <= 0:
        return None
    _PACK_BUDGET[0] -= 1
    pack = _PACKS[n] = struct.Struct(f"{n}s").pack_into
    return pack


_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

TRANSITIONS = transitions(
    {
        S.IDLE: (S.CONNECTING, S.BINDING, S.ACCEPTING),
        S.CONNECTING: (S.CONNECTED,),
        S.ACCEPTING: (S.CONNECTED,),
        S.CONNECTED: (S.CLOSING,),
        S.BINDING: (S.BOUND,),
        S.BOUND: (S.LISTENING,),
        S.LISTENING: (),
        S.CLOSING: (),
    }
)
"""The legal moves. Anything else is the caller's mistake: `SocketModeError`."""


async def connect_any(
    loop: asyncio.AbstractEventLoop, target: Address, use_ipv6: bool
) -> socket.socket:
    """A non-blocking socket connected to the first address of `target` that takes the
    connection (a name resolves to IPv6 with `use_ipv6`, else to IPv4).

    Raises:
        OSError: the failure of the one address tried, or `ConnectErrors` with each
            one's when there were several (asyncio's `create_connection` would fold
            them into an `OSError` with no errno); `socket.gaierror` for a name that
            does not resolve.
    """
    if target.ip is not None:  # a literal: nothing to wait for
        infos = socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    else:
        family = socket.AF_INET6 if use_ipv6 else socket.AF_INET
        infos = await loop.getaddrinfo(
            target.host, target.port, family=family, type=socket.SOCK_STREAM
        )
    tried: list[tuple[Any, OSError]] = []
    for fam, typ, proto, _, addr in infos:
        s = socket.socket(fam, typ, proto)
        try:
            s.setblocking(False)
            await loop.sock_connect(s, addr)
        except BaseException as e:
            s.close()
            if not isinstance(e, OSError):
                raise
            tried.append((addr, e))
            continue
        return s
    if len(tried) == 1:
        raise tried[0][1]
    raise ConnectErrors(target.host, tried)


class StreamSocket(SocketBase):
    """An `ISocket` over a stream transport; subclasses say how to open and bind."""

    __slots__ = (
        "_accept_decided",
        "_accept_target",
        "_area",
        "_cache",
        "_dfd",
        "_direct",
        "_direct_bytes",
        "_drain_left",
        "_drain_mark",
        "_draining",
        "_dsend",
        "_hend",
        "_hold",
        "_hstart",
        "_in_listen_result",
        "_into",
        "_listener",
        "_lsock",
        "_paused",
        "_peer_end",
        "_rbuf",
        "_retry_handle",
        "_rhead",
        "_rmv",
        "_rpartial",
        "_rpos",
        "_rq",
        "_rwant",
        "_server_name",
        "_shutdown_wanted",
        "_stall_limit",
        "_taim",
        "_taimed",
        "_target",
        "_timer",
        "_tlen",
        "_tr",
        "_zero_copy",
    )

    TRANSITIONS = TRANSITIONS
    LOG_FLAG = LogFlags.LOG_TCP
    KIND = "tcp"
    KEEP_OPEN_ON_EOF: ClassVar[bool] = True

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool = False
    ) -> None:
        super().__init__(iomux, user, log, useIPv6)
        self._tr: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._server_name: str | None = None
        # receive side
        # the Recvs queued behind the head; None while there are none (a native test on
        # the per-read path, where a deque's truth would be a call)
        self._rq: deque[tuple[Any, memoryview, int, bool]] | None = None
        self._rhead = False
        self._rbuf: Any = None
        # the head Recv's buffer as it is filled: the bytearray itself when it takes the
        # whole buffer, else a view of it (never handed to the transport: see get_buffer)
        self._rmv: Any = None
        self._rwant = 0
        self._rpos = 0
        self._rpartial = False
        self._into = _HOLD
        self._zero_copy = False
        # the compiled helper's `RecvTarget` (`_direct.recv_target`) and its bound `aim`
        self._target: Any = None
        self._taim: Any = None
        # the bytearray the target points at all of (`aim`), and its length then: a
        # Recv into the same buffer, of the same length, reads there with no call
        self._taimed: Any = None
        self._tlen = 0
        area = iomux._read_area
        if area is None:
            area = iomux._read_area = bytearray(HOLD_LIMIT)
        self._area: bytearray = area
        self._hold: bytearray | None = None
        self._hstart = 0
        self._hend = 0
        self._paused = False
        self._peer_end: ShutdownReason | None = None
        # send side
        self._direct: Any = None  # the direct path's sender (`_direct.py`), while allowed
        self._dfd = -1  # its descriptor, for `os.write` (`_write_fd_ok`), or -1
        self._dsend: Any = None  # the compiled helper's bound `write`, while allowed
        self._direct_bytes = False  # a `bytes` goes direct too (`_direct.takes_bytes`)
        self._cache: list[bytes | bytearray] = []
        self._shutdown_wanted = False
        self._draining = False
        self._drain_left = 0
        self._drain_mark = 0.0
        self._stall_limit = STALL_TIMEOUT
        # server side
        self._lsock: socket.socket | None = None
        self._in_listen_result = False
        self._accept_decided = False
        self._accept_target: StreamSocket | None = None
        self._listener: StreamSocket | None = None

    # ------------------------------------------------------------------ state machine

    def _illegal(self, old: State, new: State) -> str:
        if new is S.CONNECTING or new is S.BINDING:
            return (
                f"Connect/Bind on a socket that is {old.value}: each socket is either a client "
                "(Connect once) or a server (Bind once); make a new socket for another"
            )
        if new is S.LISTENING:
            return f"Listen on a socket that is {old.value}: call Bind first, then Listen once"
        return SocketBase._illegal(self, old, new)

    # ------------------------------------------------------------------ deferral, the end

    def _run_due_held(self) -> None:
        if self._hstart != self._hend and self._rhead and self._state not in ENDED:
            self._deliver_held()
        if self._peer_end is not None and self._state not in ENDED:
            self._check_end()

    def _release(self) -> None:
        """Cancel the task and timers, drop buffers, close the transport and listener."""
        self._cancel_task()
        for h in (self._timer, self._retry_handle):
            if h is not None:
                h.cancel()
        self._timer = self._retry_handle = None
        self._rq = None
        self._rhead = False
        self._rbuf = self._rmv = None
        t, self._target = self._target, None
        self._taim = self._taimed = None
        if t is not None:
            t.clear()
        self._draining = False
        self._hold = None
        self._hstart = self._hend = 0
        self._cache.clear()
        self._drop_direct()
        tr, self._tr = self._tr, None
        if tr is not None:
            tr.close()
        self._close_listener()

    def _drop_direct(self) -> None:
        """No more direct sends: the descriptor may close, or go to another owner."""
        d, self._direct = self._direct, None
        self._dfd = -1
        self._dsend = None
        if d is not None:
            _direct.release(d)

    def _close_listener(self) -> None:
        lsock, self._lsock = self._lsock, None
        if lsock is not None:
            if self._state is not S.BINDING:
                try:
                    self._loop.remove_reader(lsock.fileno())
                except (ValueError, OSError):
                    pass
            self._listener_closed(lsock)
            lsock.close()

    def _listener_closed(self, lsock: socket.socket) -> None:
        """Hook: the listening socket is about to close (local sockets unlink here)."""

    # ------------------------------------------------------------------ ISocket: client

    def Connect(self, address: str, serverName: str | None = None) -> None:
        """Connect to `address`: `SocketConnectComplete`, or `SocketShutdown` with
        `SOCKET_ADDRESS_INVALID`, `SOCKET_CONNECT_REJECTED` or `SOCKET_CONNECT_FAILED`
        (TLS also `SOCKET_TLS_HANDSHAKE_FAILED`)."""
        target = self._connect_target(address)
        self._server_name = serverName
        if target is not None:
            self._task = self._loop.create_task(self._connect(target))

    async def _connect(self, target: Any) -> None:
        try:
            await self._open(target)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self._state is S.CONNECTING:
                self._task = None
                self._event(self._open_failed, self._connect_reason(e), "Connect failed", detail(e))
        else:
            self._task = None

    def _connect_reason(self, exc: BaseException) -> ShutdownReason:
        return reason_of(exc, CONNECT)

    async def _open(self, target: Any) -> None:
        """Open the transport with the socket's protocol, `_as_protocol` (TCP here)."""
        sock = await connect_any(self._loop, target, self._use_ipv6)
        # from here on the loop owns `sock` and closes it on failure
        await self._loop.create_connection(self._as_protocol, sock=sock)

    def _as_protocol(self) -> Any:
        """The protocol the loop's transport (or SSL layer) gets for this socket: the
        socket itself on uvloop, which takes any object with a `get_buffer` that is no
        `asyncio.Protocol`, and in the pure build, where the socket is an
        `asyncio.BufferedProtocol` itself (see the end of this module); elsewhere
        `_Events`, an `asyncio.BufferedProtocol` whose events are the socket's methods."""
        if isinstance(self, BufferedProtocol) or type(self._loop).__module__.startswith("uvloop"):
            return self
        return _Events(self)

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr: Any = transport
        if self._state is not S.CONNECTING and self._state is not S.ACCEPTING:
            tr.abort()
            return
        self._tr = tr
        # the one transport known to let go of the buffer before `buffer_updated`
        self._zero_copy = type(tr).__module__ == "asyncio.selector_events"
        tr.set_write_buffer_limits(high=0)
        # (none for a socket whose Shutdown came while connecting: `Send`'s fast path
        # takes an open direct path to mean connected with no Shutdown asked)
        d = self._direct = None if self._shutdown_wanted else _direct.sender(tr)
        self._direct_bytes = _direct.takes_bytes(tr)
        if d is not None:
            if _FAST:
                self._dsend = d.write
                t = self._target = _direct.recv_target(tr)
                if t is not None:
                    self._taim = t.aim
            elif _write_fd_ok():
                self._dfd = d.fileno()
        if not _FAST and _direct.area_reader_ok(tr):
            # the pure build on uvloop reads into the loop's read area anyway: the
            # transport asks a C callable for it, not `get_buffer` (`_AreaReader`)
            self._into = _AREA
            tr.set_protocol(_AreaReader(self))
        accepted = self._state is S.ACCEPTING
        self._set_state(S.CONNECTED)
        self._remember_local(tr)
        if self._qos is not None:
            self._apply_qos()
        self._event(self._ready, accepted)

    def _ready(self, accepted: bool) -> None:
        """The connection is up (an event): cached sends go out, the app hears of it,
        and a `Shutdown` made while connecting begins."""
        self._recheck_send()  # a SocketSendResult the app set since the socket took its user
        if self._transport_ready():
            for data in self._cache:
                self._write(data)
            self._cache.clear()
            self._callback(self._ready_callback(accepted))
        if self._shutdown_wanted and self._state is S.CONNECTED:
            self._begin_close()

    def _transport_ready(self) -> bool:
        """Hook before the app hears of the connection (TLS checks ALPN); False ends it."""
        return True

    def _ready_callback(self, accepted: bool) -> str:
        """Hook: the callback that tells the app the connection is up (a TLS upgrade
        says `SocketUpgradeToTLSComplete`)."""
        return "SocketAcceptComplete" if accepted else "SocketConnectComplete"

    def _remember_local(self, tr: Any) -> None:
        try:
            name = tr.get_extra_info("sockname")
            self._local = (format_ip(name[0]), int(name[1]))
        except (TypeError, IndexError):
            pass

    def get_buffer(self, sizehint: int) -> Any:
        if self._rhead and self._hstart == self._hend:
            # (`_rmv` is the bytearray itself only while nothing was put into it yet)
            if self._zero_copy and self._rmv is self._rbuf:
                self._into = _USER
                return self._rbuf
            if self._taim is not None:  # the compiled helper's target (never in the pure build)
                if (
                    self._rbuf is self._taimed
                    and not self._rpos
                    and self._rwant == self._tlen == builtins.len(self._rbuf)
                ):
                    # all of the app's buffer of the last read again, its length
                    # unchanged: the target as it was aimed (it exports the bytearray's
                    # storage anew at each read)
                    self._into = _USER
                    return self._target
                return self._aim()
            self._into = _AREA
            return self._area
        self._into = _HOLD
        hold = self._hold
        if hold is None:
            hold = self._hold = bytearray(HOLD_LIMIT)
        elif self._hend == len(hold):
            if self._hstart:
                n = self._hend - self._hstart
                hold[:n] = hold[self._hstart : self._hend]
                self._hstart, self._hend = 0, n
            else:  # paused, but the transport still asks: keep it bounded
                hold.extend(bytes(4096))
        return memoryview(hold)[self._hend :]

    def _aim(self) -> Any:
        """`get_buffer` with the compiled helper's target, aimed anew: the part of the
        app's bytearray the head Recv still wants, with no export of the bytearray (see
        `_fastsend.RecvTarget`); the read area for a buffer that is no bytearray or
        shrank since its Recv. (Out of `get_buffer`: its locals would cost the pure
        build's frame of every read.)"""
        rbuf = self._rbuf
        rpos = self._rpos
        want = self._rwant
        if not rpos and want == builtins.len(rbuf):  # all of it, the common case
            t = self._taim(rbuf)
            self._taimed = None if t is None else rbuf
            self._tlen = want
        else:
            self._taimed = None
            t = self._target.prepare(rbuf, rpos, want)
        if t is not None:
            self._into = _USER
            return t
        self._into = _AREA
        return self._area

    def buffer_updated(self, nbytes: Any) -> None:
        # `nbytes` stays the transport's int object for the common result (read from the
        # start: `pos` is `nbytes`): the compiled build passes it on without making
        # another. Ir per 1 KiB request, tcp plain echo (python -m benchmarks.callgrind):
        # compiled uvloop 6,031 -> 5,909, asyncio 22,677 -> 22,555; pure Python pays
        # about 80 (12,806 -> 12,888 uvloop, passing `pos` / this).
        n: int = nbytes
        into = self._into
        if into == _AREA:
            if not self._rhead or self._hstart != self._hend:
                # (only where the transport reads into the area whatever is pending:
                # `_AreaReader`) no Recv to take them, or held bytes ahead of them
                self._area_held(n)
                return
            rpos = self._rpos
            pos = rpos + n if rpos else n  # (the pure build: no new int when rpos is 0)
            if pos > self._rwant:  # more than the head Recv takes: the hold sorts it out
                self._area_to_hold(n)
                return
            try:  # the copy into the app's buffer (figures beside `_AREA`)
                _PACKS[n](self._rmv, rpos, self._area)
            except (IndexError, TypeError, struct.error):  # no pack (None) yet: `_copy_in`
                self._copy_in(rpos, n)
        elif into:  # _USER: the transport read into the buffer itself
            rpos = self._rpos
            pos = rpos + n if rpos else n
        else:
            self._held(n)
            return
        if self._rpartial or pos == self._rwant:
            buf = self._rbuf
            if self._rq is not None:  # (no local for it: each one costs the pure build)
                self._rbuf, self._rmv, self._rwant, self._rpartial = self._rq.popleft()
                if not self._rq:
                    self._rq = None
            else:
                self._rhead = False
                self._rbuf = self._rmv = None
            self._rpos = 0
            # the per-read event, written out: see `SocketBase._event`
            self._in_event = True
            try:
                self._user.SocketRecvResult(self, buf, pos if rpos else nbytes)
            except Exception as e:
                self._raised("SocketRecvResult", e)
            if self._due:
                if self._send_due == 1 and self._state is _CONNECTED and not self._queued:
                    # the flow-control echo: the result of the one Send the app made,
                    # from this event (what `_run_due` would do, one frame less)
                    self._send_due = 0
                    self._due = False
                    if self._w_send:
                        try:
                            self._user.SocketSendResult(self)
                        except Exception as e:
                            self._raised("SocketSendResult", e)
                    if self._due:
                        self._run_due()
                else:
                    self._run_due()
            self._in_event = False
        else:
            self._rpos = pos
            if self._rmv is self._rbuf:  # part filled: a view from now on (get_buffer)
                self._rmv = memoryview(self._rbuf)

    def _held(self, nbytes: int) -> None:
        """`buffer_updated` for bytes read into the hold (no Recv pending, or held bytes
        ahead of it)."""
        if self._state is not S.CONNECTED:
            self._hstart = self._hend = 0  # closing: what the peer still sends is dropped
            return
        self._hend += nbytes
        if self._rhead:
            self._event(self._deliver_held)
        elif self._hend - self._hstart >= HOLD_LIMIT and not self._paused and self._tr is not None:
            self._paused = True
            self._tr.pause_reading()

    def _copy_in(self, rpos: int, nbytes: int) -> None:
        """The copy of `buffer_updated` for a read size with no pack yet (made now while
        `_PACK_BUDGET` lasts), one larger than `_PACK_MAX`, or a buffer the app shrank
        while its Recv was pending. A read larger than `_PACK_MAX` is copied view to
        view, once: tcp plain echo 64 KiB, pure uvloop (python -m benchmarks.callgrind
        --size 65536) 149,325 -> 90,568 Ir/request, against 69,722 raw; a shrunk buffer
        takes a slice assignment (a temporary, a second copy)."""
        rmv = self._rmv
        end = rpos + nbytes
        if end <= memoryview(rmv).nbytes:
            if nbytes <= _PACK_MAX:
                pack = _pack_for(nbytes)
                if pack is not None:
                    pack(rmv, rpos, self._area)
                    return
            else:  # one copy, view to view (a slice of the area would be a second)
                with memoryview(rmv) as dst, memoryview(self._area) as src:
                    dst[rpos:end] = src[:nbytes]
                return
        rmv[rpos:end] = self._area[:nbytes]

    def _area_held(self, nbytes: int) -> None:
        """What the loop's read area got joins the held bytes (`_AreaReader`'s reads
        while no Recv is pending, or behind bytes still held)."""
        if self._state is S.CONNECTED:
            hold = self._hold
            if hold is None:
                hold = self._hold = bytearray(HOLD_LIMIT)
            end = self._hend + nbytes
            if end > builtins.len(hold) and self._hstart:
                n = self._hend - self._hstart
                hold[:n] = hold[self._hstart : self._hend]
                self._hstart, self._hend = 0, n
                end = n + nbytes
            if end > builtins.len(hold):
                hold.extend(bytes(end - builtins.len(hold)))
            hold[self._hend : end] = memoryview(self._area)[:nbytes]
        self._held(nbytes)

    def _area_to_hold(self, nbytes: int) -> None:
        """What the loop's read area got goes to the (empty) hold, and from there to the
        pending Recvs, as bytes read while none was pending do."""
        hold = self._hold
        if hold is None:
            hold = self._hold = bytearray(HOLD_LIMIT)
        hold[:nbytes] = self._area[:nbytes]
        self._hstart, self._hend = 0, nbytes
        self._event(self._deliver_held)

    def _deliver_held(self) -> None:
        """Move held bytes into pending Recvs (we are in an event or in `_run_due`)."""
        hold = self._hold
        while self._rhead and self._hstart < self._hend and hold is not None:
            k = min(self._hend - self._hstart, self._rwant - self._rpos)
            self._rmv[self._rpos : self._rpos + k] = memoryview(hold)[
                self._hstart : self._hstart + k
            ]
            self._hstart += k
            pos = self._rpos + k
            if self._rpartial or pos == self._rwant:
                self._callback("SocketRecvResult", self._next_recv(), pos)
                if self._state is not S.CONNECTED:
                    return
                hold = self._hold
            else:
                self._rpos = pos
                if self._rmv is self._rbuf:  # part filled: a view from now on (get_buffer)
                    self._rmv = memoryview(self._rbuf)
        if self._hstart == self._hend:
            self._hstart = self._hend = 0
        if self._paused and self._hend - self._hstart < HOLD_LIMIT and self._tr is not None:
            self._paused = False
            self._tr.resume_reading()
        if self._peer_end is not None:
            self._check_end()

    def _next_recv(self) -> Any:
        """The head Recv is done: its buffer (no view of it kept); the next queued Recv,
        if any, becomes the head. (The per-read event does the same, written out.)"""
        buf = self._rbuf
        rq = self._rq
        if rq is not None:
            self._rbuf, self._rmv, self._rwant, self._rpartial = rq.popleft()
            if not rq:
                self._rq = None
        else:
            self._rhead = False
            self._rbuf = self._rmv = None
        self._rpos = 0
        return buf

    def eof_received(self) -> bool | None:
        if self._state is S.CLOSING:
            if self._draining:  # the peer may still read what we send: carry on
                self._peer_end = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
                return True if self.KEEP_OPEN_ON_EOF else None
            if self._tr is not None:
                self._tr.close()
            return None
        if self._state is not S.CONNECTED:
            return None
        self._peer_end = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
        self._event(self._check_end)
        return True if self.KEEP_OPEN_ON_EOF else None

    def connection_lost(self, exc: Exception | None) -> None:
        # first of all: the transport closes its descriptor once this returns
        self._drop_direct()
        self._tr = None
        self._event(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        """The transport is gone (an event)."""
        st = self._state
        if st is S.CLOSING:
            if self._blocked or self._unreported or self._draining:
                self._fail_log(
                    "lost while closing",
                    f"{exc!r}; the bytes of {self._unreported} Send(s) never left",
                )
                self._end(ShutdownReason.SOCKET_LOST)
                return
            if exc is not None:
                self._fail_log("lost while closing", repr(exc))
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
            return
        if st is not S.CONNECTED:
            return
        if self._peer_end is None:
            if exc is None:
                self._peer_end = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
            else:
                self._fail_log("connection lost", detail(exc))
                self._peer_end = self._lost_reason(exc)
        self._check_end()

    def _lost_reason(self, exc: BaseException) -> ShutdownReason:
        return reason_of(exc, LOST)

    def _check_end(self) -> None:
        """The peer is gone: end once every held byte went to a Recv (in an event)."""
        if self._hstart != self._hend or self._state is not S.CONNECTED:
            return
        reason = self._peer_end
        assert reason is not None
        if self._rhead and self._rpos:
            # a pending exact Recv that can no longer be filled gets what there is
            n = self._rpos
            self._callback("SocketRecvResult", self._next_recv(), n)
            if self._state is not S.CONNECTED:
                return
        self._end(reason)

    def resume_writing(self) -> None:
        SocketBase.resume_writing(self)
        if self._draining and self._state is S.CLOSING and self._tr is not None:
            self._draining = False  # the last byte left: now our close
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._close_output()

    def _all_sent(self) -> None:
        """Every byte written reached the kernel (a TLS socket's writer says so)."""
        StreamSocket.resume_writing(self)

    # ------------------------------------------------------------------ ISocket: data

    def Send(self, buf: Buffer, len: int | None = None) -> None:
        """Send the first `len` bytes of `buf`; the caller may reuse `buf` on return.

        Leads to one `SocketSendResult` once the bytes have left for the kernel (cached
        until `SocketConnectComplete` if the socket is still connecting). Ignored after
        `Shutdown`, and once the connection is lost (while bytes it brought still wait
        for `Recv`; its `SocketShutdown` follows them).
        """
        if not is_owned(self._owner):
            self._mux.on_loop("Send")  # the thread check, exact (see `_iomux`)
        data: Any
        fd = self._dfd  # (-1 in the compiled build with its helper: see `_write_fd_ok`)
        if fd >= 0:  # the pure build's direct path is open: no check of the helper's
            if type(buf) is bytearray and not self._blocked:
                # the common case of the pure build, written out: a bytearray while the
                # direct path is open (connected, no Shutdown asked, nothing in the
                # transport). 65 opcodes in place of 102 per 1 KiB request, pure uvloop
                # plain echo (python -m benchmarks.callgrind): 14,191 -> 13,429 Ir; flow
                # 15,668 -> 14,899; with `os.write` (`_write_fd_ok`) 12,821 / 14,291
                if len is None:
                    data = buf
                    lent = True
                    len = _len(buf)  # from here the count to send (no local more)
                elif len < 8192:  # `_VIEW_FROM`, a constant here (one opcode less)
                    data = buf[:len]  # a copy of its own
                    lent = False
                    if _len(data) != len:
                        raise ValueError(f"Send: len={len} but the buffer holds {_len(buf)} bytes")
                else:  # large: a view (see `_VIEW_FROM`), gone when Send returns
                    if len > _len(buf):
                        raise ValueError(f"Send: len={len} but the buffer holds {_len(buf)} bytes")
                    data = memoryview(buf)[:len]
                    lent = True
                try:
                    n = _os_write(fd, data)  # see `_write_fd_ok`
                except OSError as e:
                    if not self._direct_rest(data, -1, lent, 0, e):
                        return
                else:
                    if n != len:  # (`len` is the count checked above: no int made again)
                        self._direct_rest(data, -1, lent, n, None)
                if not self._blocked:  # `_count_send()`, written out as below
                    if self._w_send:
                        self._send_due += 1
                        if not self._due:
                            self._due = True
                            if not self._in_event:
                                self._mux._deferred.add(self)
                else:
                    self._unreported += 1
                return
        else:
            ds = self._dsend  # (the compiled helper's; None in the pure build)
            if ds is not None and not self._blocked:
                # the compiled build's direct path, in one call: connected, no Shutdown asked,
                # nothing in the transport; the helper sends from the app's bytearray, bytes
                # or byte view, `MSG_NOSIGNAL` given once (-1: anything else, or a `len` the
                # general path below words; nothing was sent)
                try:
                    left: int = ds(buf, len)
                except OSError as e:
                    left = 0
                    if not self._direct_rest(buf, -1 if len is None else len, True, 0, e):
                        return
                if left > 0:  # the kernel took part: the rest goes to the transport
                    want = builtins.len(buf) if len is None else len
                    self._direct_rest(buf, -1 if len is None else len, True, want - left, None)
                if left >= 0:
                    if not self._blocked:  # `_count_send()`, written out as below
                        if self._w_send:
                            self._send_due += 1
                            if not self._due:
                                self._due = True
                                if not self._in_event:
                                    self._mux._deferred.add(self)
                    else:
                        self._unreported += 1
                    return
        st = self._state
        # `data`: what to send, read from the buffer with at most one copy. `lent`: it is
        # the app's own memory (its buffer or a view of it), which the socket copies
        # before it keeps any of it (the app may reuse the buffer once `Send` returns).
        # `cut` (the compiled helper only, `_FAST`): send the first `cut` bytes of the
        # app's `data` without making a slice (-1: all of `data`).
        lent = False
        cut = -1
        tb = type(buf)
        if tb is bytearray:
            if len is None:
                data = buf
                lent = True
            elif _FAST and 0 <= len <= builtins.len(buf):
                data = buf
                lent = True
                cut = len
            else:  # a copy of its own (the transports take a bytearray as it is)
                data = buf[:len]
                if builtins.len(data) != len:
                    raise ValueError(
                        f"Send: len={len} but the buffer holds {builtins.len(buf)} bytes"
                    )
        elif tb is bytes:
            data = buf[:len]  # all of a bytes is itself
            if len is not None and builtins.len(data) != len:
                raise ValueError(f"Send: len={len} but the buffer holds {builtins.len(buf)} bytes")
        else:
            mv = memoryview(buf)
            if mv.ndim != 1 or mv.itemsize != 1:
                mv = mv.cast("B")
            if len is not None and (len < 0 or len > mv.nbytes):
                raise ValueError(f"Send: len={len} but the buffer holds {mv.nbytes} bytes")
            data = mv
            lent = True
            if len is not None:
                if _FAST:
                    cut = len
                else:
                    data = mv[:len]
        if st is _CONNECTED and not self._shutdown_wanted:
            tr = self._tr
            if tr is None:  # lost while bytes wait for the app: nothing goes any more
                return
            d = self._direct
            if d is not None and not self._blocked and (tb is not bytes or self._direct_bytes):
                # the direct path (`_direct.py`): while the transport holds nothing, the
                # kernel takes the bytes from here; what it does not take goes to the
                # transport as a copy (which pauses it: the result waits, as below)
                try:
                    if fd >= 0:  # the pure build: `os.write` where it may (`_write_fd_ok`)
                        n = _os_write(fd, data)
                    else:
                        n = d.send(data, _NOSIGNAL) if cut < 0 else d.send(data, _NOSIGNAL, cut)
                except OSError as e:
                    if not self._direct_rest(data, cut, lent, 0, e):
                        return
                    n = -1
                if n >= 0 and n != (builtins.len(data) if cut < 0 else cut):
                    self._direct_rest(data, cut, lent, n, None)
            elif cut >= 0:
                tr.write(_owned(data, 0, cut))
            elif lent:  # all of the app's buffer or view: one copy
                tr.write(data.tobytes() if type(data) is memoryview else bytes(data))
            else:
                tr.write(data)
            # `_count_send()`, written out: the call costs 265 Ir per 1 KiB request
            # (pure uvloop plain echo, python -m benchmarks.callgrind: 13,019 / 12,754)
            if not self._blocked:
                if self._w_send:
                    self._send_due += 1
                    if not self._due:
                        self._due = True
                        if not self._in_event:
                            self._mux._deferred.add(self)
            else:
                self._unreported += 1
            return
        if lent:
            data = _owned(data, 0, cut)
        if st is S.CONNECTING or st is S.ACCEPTING:
            if not self._shutdown_wanted:
                self._cache.append(data)
            return
        if st is S.CLOSING or st is S.CLOSED or (st is S.CONNECTED and self._shutdown_wanted):
            return
        self._check_alive("Send")
        raise SocketModeError(
            f"Send on a socket that is {st.value}: Send needs a socket on which Connect was "
            "called, or one handed over by SocketAcceptComplete"
        )

    def _direct_rest(self, data: Any, cut: int, lent: bool, n: int, err: OSError | None) -> bool:
        """A direct send the kernel did not take whole (`n` bytes of `data`, or `err`):
        the rest goes to the transport as a copy the socket owns (which pauses it, so the
        result waits for the kernel). False: the bytes never left and get no result (the
        transport met the error too and is closing; `connection_lost` follows)."""
        tr = self._tr
        if err is not None and not isinstance(err, BlockingIOError):
            # the transport meets the error again and ends with its own reason
            self._drop_direct()
            tr.write(_owned(data, 0, cut) if lent else data)
            return not tr.is_closing()
        tr.write(_owned(data, n, cut) if lent else data[n:])
        return True

    def _write(self, data: bytes | bytearray) -> None:
        self._tr.write(data)
        self._count_send()

    def Recv(
        self, buf: bytearray | memoryview, len: int | None = None, recvPartial: bool = False
    ) -> None:
        """Receive into `buf`: `SocketRecvResult(socket, buf, n)` with exactly `len` bytes
        (`n == len`), or with `recvPartial` 1..`len` bytes as soon as any are there.
        Several Recv calls queue in order. Ignored once the socket is closing. Once the
        result (or `SocketRecvCanceled`) has run, the socket keeps no view of `buf`: it
        may be resized.

        Raises:
            ValueError: `len` is not 1..len(buf), or `buf` is read-only or not contiguous
                (a strided view such as `memoryview(b)[::2]`: pass a bytearray or a
                contiguous view, and copy from it).
            SocketModeError: a listening socket, a deleted one, or a call from a thread
                other than the loop's.
        """
        st = self._state
        if not is_owned(self._owner):
            self._mux.on_loop("Recv")  # the thread check, exact (see `_iomux`)
        mv: Any
        if st is _CONNECTED and type(buf) is bytearray and not self._rhead:
            # the common case, kept short: the only Recv, into a bytearray, which the
            # transport reads into directly (no view of it is kept after the result)
            size = builtins.len(buf)
            if len is None or len == size:  # all of it (written out: no `mv`, `n`)
                if not size:
                    raise ValueError("Recv: the buffer is empty; pass one of at least one byte")
                self._rhead = True
                self._rbuf = self._rmv = buf
                self._rwant = size
                self._rpartial = recvPartial  # (`_rpos` is 0 while connected with no Recv)
                if self._hstart != self._hend or self._peer_end is not None:
                    self._push(HELD)
                return
            if not 0 < len < size:
                raise ValueError(
                    f"Recv: len={len} must be between 1 and the buffer's size ({size})"
                )
            self._rhead = True
            self._rbuf = buf
            self._rmv = memoryview(buf)[:len]
            self._rwant = len
            self._rpartial = recvPartial
            if self._hstart != self._hend or self._peer_end is not None:
                self._push(HELD)
            return
        if self._recv_ignored(st):
            return
        if st is S.BINDING or st is S.BOUND or st is S.LISTENING:
            raise SocketModeError("Recv on a listening socket: receive on the accepted sockets")
        if type(buf) is bytearray:  # writable bytes: the view needs no checks
            mv = buf
            size = buf.__len__()
        else:
            mv = _recv_view(buf)
            size = mv.nbytes
        n = size if len is None else len
        if n <= 0 or n > size:
            raise ValueError(f"Recv: len={len} must be between 1 and the buffer's size ({size})")
        if n != size:
            mv = memoryview(mv)[:n]
        if self._rhead:
            if self._rq is None:
                self._rq = deque()
            self._rq.append((buf, mv, n, recvPartial))
            return
        self._rhead = True
        self._rbuf = buf
        self._rmv = mv
        self._rwant = n
        self._rpos = 0
        self._rpartial = recvPartial
        if self._hstart != self._hend or self._peer_end is not None:
            self._push(HELD)

    def RecvCancel(self) -> None:
        """Cancel every pending `Recv`: `SocketRecvCanceled(socket, buf)` for each, later.
        Bytes already placed into a cancelled buffer are kept for the next `Recv`."""
        self._check_alive("RecvCancel")
        if not self._rhead:
            return
        bufs = [self._rbuf]
        if self._rpos:
            kept = bytes(self._rmv[: self._rpos])
            held = bytes(self._hold[self._hstart : self._hend]) if self._hold is not None else b""
            data = kept + held
            self._hold = bytearray(max(HOLD_LIMIT, data.__len__()))
            self._hold[: data.__len__()] = data
            self._hstart, self._hend = 0, data.__len__()
        if self._rq is not None:
            bufs.extend(item[0] for item in self._rq)
        self._rq = None
        self._rhead = False
        self._rbuf = self._rmv = None
        self._rpos = 0
        for b in bufs:
            self._push(("SocketRecvCanceled", (b,)))

    def _raw_socket(self) -> socket.socket | None:
        if self._lsock is not None:
            return self._lsock
        if self._tr is not None:
            sock: socket.socket | None = self._tr.get_extra_info("socket")
            return sock
        return None

    def _qos_socket(self) -> socket.socket | None:
        sock = self._raw_socket()
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None  # a local socket has no DSCP
        return sock

    # ------------------------------------------------------------------ ISocket: end

    def Shutdown(self) -> None:
        """Send what is cached, close, then `SocketShutdown(SOCKET_SHUTDOWN_NORMAL)`.

        Every byte of every `Send` goes out first, for as long as the peer takes some: a
        peer that takes nothing for `STALL_TIMEOUT` seconds is given up on, and the
        socket ends with `SOCKET_LOST` (no `SocketSendResult` for the bytes that never
        left). Our close follows the last byte; then the peer's is awaited for at most
        `LINGER_TIMEOUT` seconds (TLS: its `close_notify`, `SHUTDOWN_TIMEOUT`). What the
        peer still sends meanwhile is dropped.
        """
        st = self._state
        self._check_alive("Shutdown")
        if st is S.CONNECTED:
            if self._peer_end is not None:
                self._end(self._peer_end)
            else:
                self._begin_close()
        elif st is S.CONNECTING or st is S.ACCEPTING:
            self._shutdown_wanted = True
        elif st in (S.IDLE, S.BINDING, S.BOUND, S.LISTENING):
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)

    def _begin_close(self) -> None:
        self._set_state(S.CLOSING)
        # from here every byte goes through the transport, behind what it holds, and our
        # close follows the last one (no Send is taken any more)
        self._drop_direct()
        self._rq = None
        self._rhead = False
        self._rbuf = self._rmv = None
        self._hstart = self._hend = 0
        tr = self._tr
        if tr is None:
            self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL)
            return
        if self._paused:
            self._paused = False
            tr.resume_reading()
        if self._blocked:
            # bytes still wait to leave: they go first, for as long as the peer takes some
            # (`resume_writing` then closes); `_drain_check` watches the progress
            self._draining = True
            self._drain_left = int(tr.get_write_buffer_size())
            self._drain_mark = self._loop.time()
            self._timer = self._loop.call_later(self._drain_poll(), self._drain_check)
        else:
            self._close_output()

    def _close_output(self) -> None:
        """Every byte left: send our close, then wait a bounded time for the peer's."""
        tr = self._tr
        if tr.can_write_eof() and self._peer_end is None:
            tr.write_eof()
            self._timer = self._loop.call_later(LINGER_TIMEOUT, self._linger_expired)
        else:  # TLS (its transport sends close_notify and waits), or the peer closed first
            tr.close()

    def _drain_poll(self) -> float:
        return min(1.0, self._stall_limit / 4)

    def _drain_check(self) -> None:
        """While `Shutdown` drains: give up once the peer took nothing for `_stall_limit`."""
        self._timer = None
        tr = self._tr
        if not self._draining or self._state is not S.CLOSING or tr is None:
            return
        left = int(tr.get_write_buffer_size())
        now = self._loop.time()
        if left < self._drain_left:
            self._drain_left = left
            self._drain_mark = now
        elif now - self._drain_mark >= self._stall_limit:
            self._draining = False
            self._fail_log(
                "Shutdown",
                f"the peer took nothing for {self._stall_limit:g} s; giving up on {left} "
                f"unsent bytes (the bytes of {self._unreported} Send(s))",
            )
            self._tr = None
            tr.abort()
            self._event(self._end, ShutdownReason.SOCKET_LOST)
            return
        self._timer = self._loop.call_later(self._drain_poll(), self._drain_check)

    def _linger_expired(self) -> None:
        self._timer = None
        if self._state is S.CLOSING and self._tr is not None:
            self._fail_log("Shutdown", "the peer did not close in time; closing anyway")
            self._tr.abort() if self._blocked else self._tr.close()

    def _hand_over(self) -> tuple[Any, bytes]:
        """Give the connection away (`UpgradeToTLSSocket`): returns the transport, with
        reading paused, and the bytes read but not yet delivered (those in a pending
        Recv's buffer first, then the held ones). The socket becomes CLOSED without a
        callback: its user hears nothing more, and its `Delete()` leaves the transport
        alone. Bytes already written stay queued in the transport, ahead of what the
        new owner writes.

        Raises:
            SocketModeError: the socket is not connected.
        """
        self._check_alive("UpgradeToTLSSocket")
        if self._state is not S.CONNECTED or self._tr is None or self._peer_end is not None:
            raise SocketModeError(
                f"UpgradeToTLSSocket needs a connected socket; this one is {self._state.value}"
            )
        tr = self._tr
        self._drop_direct()  # the descriptor is the new owner's now
        tr.pause_reading()
        data = bytes(self._rmv[: self._rpos]) if self._rhead and self._rpos else b""
        if self._hold is not None and self._hstart != self._hend:
            data += bytes(self._hold[self._hstart : self._hend])
        self._tr = None
        # inside SocketConnectComplete/SocketAcceptComplete the opening task still awaits
        # its transport: cancelling it (in _release) would make asyncio close the
        # transport the new owner takes over, so let it finish on its own
        self._task = None
        self._end(ShutdownReason.SOCKET_SHUTDOWN_NORMAL, silent=True)
        return tr, data

    # ------------------------------------------------------------------ server side

    def Bind(
        self, localAddr: str | None = None, localPort: int = 0, reuseAddr: bool = False
    ) -> None:
        """Bind to `localAddr:localPort` (None: all interfaces, port 0: any):
        `SocketBindResult(socket, addr, port)` or `SocketShutdown` with
        `SOCKET_ADDRESS_INVALID`, `SOCKET_OPEN_FAILED`, `SOCKET_ADDR_IN_USE` or
        `SOCKET_BIND_FAILED`."""
        self._check_alive("Bind")
        self._set_state(S.BINDING)
        if not 0 <= int(localPort) <= 65535:
            self._fail_log("Bind: address invalid", f"port {localPort} out of range")
            self._end(ShutdownReason.SOCKET_ADDRESS_INVALID)
            return
        self._task = self._loop.create_task(self._bind(localAddr, int(localPort), reuseAddr))

    async def _bind(self, localAddr: str | None, localPort: int, reuseAddr: bool) -> None:
        try:
            family, sockaddr = await self._bind_target(localAddr, localPort)
        except AddressError as e:
            self._task = None
            self._fail_log("Bind: address invalid", e)
            self._event(self._end, ShutdownReason.SOCKET_ADDRESS_INVALID)
            return
        except OSError as e:
            self._task = None
            reason, why = translate(e, BIND)
            self._event(self._open_failed, reason, "Bind: cannot resolve", why)
            return
        self._task = None
        if self._state is not S.BINDING:
            return
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            reason, why = translate(e, OPEN)
            self._event(self._open_failed, reason, "Bind: socket() failed", why)
            return
        try:
            sock.setblocking(False)
            if reuseAddr:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._bind_socket(sock, sockaddr)
        except OSError as e:
            sock.close()
            reason, why = translate(e, BIND)
            self._event(self._open_failed, reason, "Bind failed", why)
            return
        self._lsock = sock
        self._local = self._bound_name(sock)
        self._set_state(S.BOUND)
        if self._qos is not None:
            self._apply_qos()
        self._event(self._bound)

    def _bound(self) -> None:
        """Bound (an event): the app hears of it; a `Listen` made meanwhile starts."""
        self._callback("SocketBindResult", self._local[0], self._local[1])
        if self._listen_wanted and self._state is S.BOUND:
            self._start_listen()

    async def _bind_target(self, localAddr: str | None, localPort: int) -> tuple[int, Any]:
        if localAddr is None or localAddr == "":
            if self._use_ipv6:
                return socket.AF_INET6, ("::", localPort)
            return socket.AF_INET, ("0.0.0.0", localPort)
        addr = parse_address(localAddr, need_port=False, default_port=localPort)
        if addr.ip is not None:
            fam = socket.AF_INET6 if addr.ip.version == 6 else socket.AF_INET
            return fam, (addr.host, addr.port)
        fam = socket.AF_INET6 if self._use_ipv6 else socket.AF_INET
        infos = await self._loop.getaddrinfo(
            addr.host, addr.port, family=fam, type=socket.SOCK_STREAM
        )
        return infos[0][0], infos[0][4]

    def _bind_socket(self, sock: socket.socket, sockaddr: Any) -> None:
        sock.bind(sockaddr)

    def _bound_name(self, sock: socket.socket) -> tuple[str, int]:
        name = sock.getsockname()
        return format_ip(name[0]), int(name[1])

    def _start_listen(self) -> None:
        sock = self._lsock
        assert sock is not None
        try:
            sock.listen(LISTEN_BACKLOG)
            self._set_state(S.LISTENING)
            self._loop.add_reader(sock.fileno(), self._on_accept_ready)
        except OSError as e:
            reason, why = translate(e, LISTEN)
            self._fail_log("Listen failed", why)
            self._end(reason)
            return
        self._log.Log(self.LOG_FLAG, "%s %x: listening on %s:%d", self.KIND, id(self), *self._local)

    def _resume_accepting(self) -> None:
        self._retry_handle = None
        if self._state is S.LISTENING and self._lsock is not None:
            self._loop.add_reader(self._lsock.fileno(), self._on_accept_ready)

    def _on_accept_ready(self) -> None:
        lsock = self._lsock
        for _ in range(ACCEPT_BATCH):
            if lsock is None or self._state is not S.LISTENING:
                return
            try:
                conn, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._fail_log("accept failed", detail(e))
                if e.errno in _ACCEPT_RESOURCE_ERRORS:
                    self._loop.remove_reader(lsock.fileno())
                    self._retry_handle = self._loop.call_later(
                        ACCEPT_RETRY_DELAY, self._resume_accepting
                    )
                    return
                continue
            self._event(self._incoming, conn, addr)

    def _remote_of(self, addr: Any) -> tuple[str, int]:
        return format_ip(addr[0]), int(addr[1])

    def _new_accepted(self) -> StreamSocket:
        return type(self)(self._mux, None, self._log, self._use_ipv6)

    def _incoming(self, conn: socket.socket, addr: Any) -> None:
        """A new connection (an event): offered to `SocketListenResult`."""
        conn.setblocking(False)
        if conn.family == socket.AF_INET or conn.family == socket.AF_INET6:
            # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and an
            # accepted socket has proto 0: without this, small writes wait for delayed ACKs.
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        new = self._new_accepted()
        new._set_state(S.ACCEPTING)
        new._listener = self
        if self._qos is not None:
            new._qos = self._qos
        self._accept_target = new
        self._accept_decided = False
        self._in_listen_result = True
        try:
            self._callback("SocketListenResult", *self._remote_of(addr))
        finally:
            self._in_listen_result = False
            self._accept_target = None
        if new._user is None or new._state is not S.ACCEPTING:
            if self._log.LogFlagSet(self.LOG_FLAG):
                self._log.Log(
                    self.LOG_FLAG, "%s %x: connection from %r denied", self.KIND, id(self), addr
                )
            conn.close()
            new._abandon()
        else:
            new._task = self._loop.create_task(new._start_accepted(conn))

    async def _start_accepted(self, conn: socket.socket) -> None:
        try:
            await self._open_accepted(conn)
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as e:
            conn.close()
            self._task = None
            if self._state is S.ACCEPTING:
                self._event(self._open_failed, self._accept_reason(e), "accept failed", detail(e))
        else:
            self._task = None

    def _accept_reason(self, exc: BaseException) -> ShutdownReason:
        return reason_of(exc, ACCEPT)

    async def _open_accepted(self, conn: socket.socket) -> None:
        await self._loop.connect_accepted_socket(self._as_protocol, conn)

    def Accept(self, remoteUser: USocket | None) -> None:
        """Only inside `SocketListenResult`: accept the connection with `remoteUser` (its
        `SocketAcceptComplete` follows with the new socket), or deny it with None."""
        self._check_alive("Accept")
        if not self._in_listen_result or self._accept_target is None:
            raise SocketModeError(
                "Accept is only allowed inside SocketListenResult, on the listening socket "
                "that reported the connection"
            )
        if self._accept_decided:
            raise SocketModeError("Accept was already called for this connection")
        self._accept_decided = True
        if remoteUser is not None:
            self._accept_target._set_user(remoteUser)


if type(vars(StreamSocket)["Send"]) is _FunctionType:  # the pure build
    # There a class with `__slots__` has no instance `__dict__` whatever its bases, so
    # the stream sockets take `asyncio.BufferedProtocol` back as a base (its `__slots__`
    # are empty: nothing changes in their layout) and asyncio's transports call the
    # socket itself, not its `_Events`: a method of the socket's class is a specialized
    # call, a slot of `_Events` the interpreter's generic look-up. Ir per 1 KiB request,
    # tcp plain echo on asyncio (python -m benchmarks.callgrind, pure): 28,031 through
    # `_Events`, 27,716 with this. The compiled build has no such choice (see
    # `SocketBase`). (`setattr`: mypyc compiles no assignment to a native class's
    # `__bases__`, though this one never runs there.)
    setattr(StreamSocket, "__bases__", (SocketBase, BufferedProtocol))  # noqa: B010


HOT_PATH: Final = ("get_buffer", "buffer_updated", "Send", "Recv")
"""The per-request methods a concrete stream kind defines again (see `own_hot_path`)."""


def own_hot_path(cls: type[StreamSocket]) -> None:
    """Make the per-request methods of concrete kind `cls` its own again (or not).

    A call of a compiled method checks that its `self` is an instance of the class that
    defines the method, and the app's call through the method's descriptor checks it
    once more; for a method of `StreamSocket` called on a `TCPSocket` each check walks
    the class's bases (`PyType_IsSubtype`, six per request), and the interpreter does
    not specialize the app's `socket.Send(...)` (its fast call of a method descriptor
    wants the descriptor's own class). So the compiled kinds define `HOT_PATH` again,
    each a direct call of the engine's (one C call): Ir per 1 KiB request (python -m
    benchmarks.callgrind), compiled tcp uvloop plain 5,494 -> 5,148, flow 6,165 ->
    5,819, asyncio flow 23,001 -> 22,336. In the pure build such a definition is one
    Python frame more per call: there this removes them again, so the engine's own are
    called.
    """
    if type(vars(StreamSocket)["Send"]) is _FunctionType:  # the pure build
        for name in HOT_PATH:
            if name in vars(cls):
                delattr(cls, name)


_ACCEPTCON = 0x10000
"""The flag /proc/net/unix shows for a listening socket."""


def unix_path_live(path: str, table: str = "/proc/net/unix") -> bool | None:
    """Is a live socket bound at `path`: a listening stream socket, or a datagram one?
    Read from the kernel's table, without connecting (a probe would show a listener a
    connection that never was). None when the table cannot be read (not Linux).

    A socket bound with a relative path is listed under that path: one that names the
    tail of `path` counts as live (it may be the same file).
    """
    try:
        with open(table, "rb") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    given = os.fsencode(path)
    full = os.fsencode(os.path.abspath(path))
    for line in lines:
        parts = line.split(None, 7)
        if len(parts) < 8:
            continue
        name = parts[7]
        relative_tail = not name.startswith((b"/", b"@")) and full.endswith(b"/" + name)
        if name != given and name != full and not relative_tail:
            continue
        try:
            flags, kind = int(parts[3], 16), int(parts[4], 16)
        except ValueError:
            continue
        if kind != socket.SOCK_STREAM or flags & _ACCEPTCON:
            return True
    return False


def remove_stale_unix_socket(path: str) -> bool:
    """Remove `path` if it is a Unix socket nobody listens on. True when it was removed.

    Whether someone listens is read from /proc/net/unix; only where that table is
    missing does a nonblocking connect probe the path.

    Raises:
        FileExistsError: something that is not a stale socket is at `path`.
        OSError: EADDRINUSE, a live socket is bound there.
    """
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "not a socket; refusing to remove it", path)
    live = unix_path_live(path)
    if live is False:
        os.unlink(path)
        return True
    if live:
        raise OSError(errno.EADDRINUSE, "a live socket is listening there", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return True
    except BlockingIOError:
        pass  # a live listener with a full backlog
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "a live socket is listening there", path)


def _recv_view(buf: Any) -> memoryview:
    """A writable, contiguous byte view of a `Recv` buffer, or the error saying what to pass.

    Raises:
        TypeError: `buf` is no buffer.
        ValueError: `buf` is read-only, or not contiguous (a strided view: the kernel
            writes one contiguous run of bytes).
    """
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"Recv: buf must be a bytearray or a writable memoryview, not {type(buf).__name__}"
        ) from None
    if mv.readonly:
        raise ValueError("Recv: the buffer is read-only; pass a bytearray or a writable memoryview")
    if not mv.c_contiguous:
        raise ValueError(
            "Recv: the buffer is not contiguous (a strided view such as memoryview(b)[::2]); "
            "pass a bytearray or a contiguous memoryview, and copy from it where the bytes "
            "must go"
        )
    if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
        mv = mv.cast("B")
    return mv
