"""The direct send path of TCP and local sockets: `Send` writes to the OS socket itself.

Theory of operation
-------------------
A stream transport's `write` costs more than the `send(2)` it makes (on asyncio it is
Python code, on uvloop a memoryview and a libuv request), and it needs bytes it may keep.
So while the transport holds nothing (the socket is not `_blocked`: its high-water mark
is 0, so "not paused" is "empty"), `StreamSocket.Send` calls `send(2)` on the
transport's socket itself, from the app's buffer where it can (no copy), with
`MSG_NOSIGNAL` (a peer's reset gives EPIPE, never SIGPIPE). What the kernel does not
take goes to the transport as a copy, which pauses it, so the bytes stay in order and the
`SocketSendResult` waits for the kernel as on the transport's path. EAGAIN sends
everything through the transport; any other error hands the bytes to the transport too,
so that it meets the error itself and ends the connection with its own reason.

Who owns the descriptor: the transport, always. The sender made here only borrows it and
never closes it (`BorrowedSocket.close` and its finalizer detach). Both loops close a
transport's descriptor only after `connection_lost` returns (asyncio in
`_call_connection_lost`, uvloop in its own), so a socket that drops its sender in
`connection_lost` and on every way out of its own (its end, `Delete`, `Shutdown`, the
hand-over to TLS) never writes to a descriptor that was closed or reused. A TLS socket
has no sender: its bytes must pass the SSL layer.

The sender is `_fastsend.FdSender` (an optional compiled helper: `send(2)` from the
buffer, with no copy and no release of the GIL) when it was built, else a
`BorrowedSocket` (`socket.send`). Both take `send(data, flags)` and raise `OSError` as
`socket.send` does (`BlockingIOError` for EAGAIN); the helper's also has `write(buf,
len)`, `Send`'s own call with `MSG_NOSIGNAL` given once, which the socket binds once
(`StreamSocket._dsend`).

The receive side's counterpart (the helper only): `recv_target` gives a socket whose
transport reads with a plain socket read a `_fastsend.RecvTarget`, a part of the app's
bytearray the transport reads into without an export of the bytearray (see
`StreamSocket.get_buffer`).
"""

from __future__ import annotations

import socket
from typing import Any

NOSIGNAL: int = getattr(socket, "MSG_NOSIGNAL", 0)
"""The flag of every direct `send(2)`: no SIGPIPE (0 where the platform lacks it)."""

_STREAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1))

FdSender: Any
RecvTarget: Any
try:
    from ._fastsend import FdSender, RecvTarget
except ImportError:  # the pure build: socket.send on a borrowed socket object
    FdSender = RecvTarget = None

FAST: bool = FdSender is not None
"""True when the compiled helper does the direct sends."""


class BorrowedSocket(socket.socket):
    """A socket object over a descriptor the transport owns: it sends, and never closes
    the descriptor (closing it, or its finalizer, only lets go of it)."""

    __slots__ = ()

    def close(self) -> None:
        """Let go of the descriptor without closing it (the transport closes it)."""
        self.detach()

    def __del__(self) -> None:
        self.detach()


def sender(tr: Any) -> Any:
    """What `Send` writes to directly for transport `tr`: an object with
    `send(data, flags) -> int`; None where the transport must not be bypassed (TLS: the
    bytes must pass the SSL layer) or has no stream socket of its own.

    The descriptor stays the transport's: the caller drops the sender (`release`) no
    later than its `connection_lost`."""
    try:
        if tr.get_extra_info("ssl_object") is not None or tr.get_extra_info("sslcontext"):
            return None
        sock = tr.get_extra_info("socket")
        if sock is None:
            return None
        fd = int(sock.fileno())
        family, kind = sock.family, sock.type
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    if fd < 0 or kind != socket.SOCK_STREAM or family not in _STREAM_FAMILIES:
        return None
    if FdSender is not None:
        return FdSender(fd, NOSIGNAL)
    try:
        borrowed = BorrowedSocket(family, kind, 0, fd)
    except OSError:
        return None
    try:
        borrowed.settimeout(0.0)  # never wait inside send (a default timeout would)
    except OSError:
        borrowed.detach()
        return None
    return borrowed


def takes_bytes(tr: Any) -> bool:
    """Should a `bytes` go direct too, on transport `tr`? Not on uvloop's without the
    compiled helper: its `write` takes a `bytes` as it is, in C, without releasing the
    GIL, for less than `socket.send` (Ir per 1 KiB echo of an app sending `bytes`, pure
    build, python -m benchmarks.callgrind: 12,602 through the transport, 14,064 through
    `socket.send`). The app's own bytearray or view goes direct everywhere: that saves
    the copy the transport needs."""
    return FAST or type(tr).__module__ == "asyncio.selector_events"


_IN_PLACE_READERS = frozenset(
    {
        ("asyncio.selector_events", "_SelectorSocketTransport"),
        ("uvloop.loop", "TCPTransport"),
        ("uvloop.loop", "UnixTransport"),
    }
)
"""The transports known to take what `get_buffer` returned, read into it and be done
with it before any other Python code runs but their own `buffer_updated` call: asyncio's
selector transport (`recv_into`, released before `buffer_updated`) and uvloop's stream
transports (libuv's alloc callback, `read(2)`, the read callback, with nothing in
between; the export is released right after `buffer_updated`). Not the SSL layers (they
keep the buffer and slice it), nor a loop that reads while other code runs (a proactor's
overlapped read)."""


def recv_target(tr: Any) -> Any:
    """A `_fastsend.RecvTarget` for the socket of transport `tr` to hand it in
    `get_buffer`, or None: without the compiled helper, or where the transport is not
    one of `_IN_PLACE_READERS` (the exact types: the SSL transports are others)."""
    t = type(tr)
    if RecvTarget is None or (t.__module__, t.__name__) not in _IN_PLACE_READERS:
        return None
    return RecvTarget()


def area_reader_ok(tr: Any) -> bool:
    """May transport `tr` be handed the pure build's `_stream._AreaReader` (a protocol
    whose `get_buffer` is a C callable)? uvloop's TCP and Unix stream transports: they
    take `get_buffer` and `buffer_updated` from the protocol once (`set_protocol`) and
    call them for each read."""
    t = type(tr)
    return t.__module__ == "uvloop.loop" and t.__name__ in ("TCPTransport", "UnixTransport")


def release(d: Any) -> None:
    """Drop a sender made by `sender` (the descriptor stays open: it is the transport's)."""
    if isinstance(d, BorrowedSocket):
        d.detach()
