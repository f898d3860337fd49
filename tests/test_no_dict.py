"""The socket classes carry no instance `__dict__`, in both builds, and are `ISocket`s by
registration (not by inheritance, see `SocketBase`): so the interpreter specializes the
app's own `socket.Send(...)` and `socket.Recv(...)` calls, and the transports still get
the protocol they need (`_stream._Events` where asyncio tests `isinstance`)."""

from __future__ import annotations

import asyncio
import dis
import os
import socket
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
from kit.conformance import STREAM_KINDS, StreamKind, close_pair, make_pair, tls_kind
from kit.loop import Mux, Recorder

import usocket_asyncio
from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    ISocket,
)

KINDS = ("tcp", "local", "tls", "udp", "dtls")


def _make(kind: str, mux: Mux, log: IInstanceLog) -> ISocket:
    rec = Recorder(kind)
    if kind == "tcp":
        return CreateTCPSocketProvider().CreateSocket(mux, rec, log)
    if kind == "local":
        return CreateLocalSocketProvider().CreateSocket(mux, rec, log)
    if kind == "udp":
        return CreateUDPSocketProvider().CreateSocket(mux, rec, log)
    prov = CreateTLSSocketProvider(None)
    ctx = prov.CreateSocketContext(log)
    if kind == "dtls":
        ctx.EnableDTLS(False)
    return prov.CreateSocket(mux, rec, log, False, ctx)


@pytest.mark.parametrize("kind", KINDS)
def test_every_socket_kind_has_no_instance_dict_and_is_an_isocket(
    mux: Mux, log: IInstanceLog, kind: str
) -> None:
    sock = _make(kind, mux, log)
    cls = type(sock)
    assert isinstance(sock, ISocket)
    assert issubclass(cls, ISocket)
    # no instance dict: an attribute the class does not define cannot be set
    assert cls.__dictoffset__ == 0, (cls, cls.__dictoffset__, usocket_asyncio.COMPILED)
    assert not hasattr(sock, "__dict__")
    with pytest.raises(AttributeError):
        sock.not_a_socket_field = 1  # type: ignore[attr-defined]
    # registered, not inherited: every abstract method is the class's own, and what
    # ISocket defines itself answers as it does there
    for name in sorted(ISocket.__abstractmethods__):
        impl = getattr(cls, name)
        assert callable(impl) and impl is not getattr(ISocket, name), (cls.__name__, name)
    assert ISocket not in cls.__mro__
    assert sock.GetSrtpProfile() is None and sock.GetSrtpKeys() is None
    if kind != "udp":  # ignored by every kind but UDP (which checks its mode)
        sock.SendTo(b"x", None, "127.0.0.1", 9)
    sock.Delete()


def _stream_kind(kind: str, ca: Any) -> StreamKind:
    """The conformance kit's stream kind for "tcp", "local" or "tls" (TLS 1.3)."""
    if kind == "tls":
        return tls_kind(ca, "tls13")
    return STREAM_KINDS["tcp4" if kind == "tcp" else "local"]


def _echo(sock: Any, buf: Any, n: int) -> None:
    """The app's echo: what a `SocketRecvResult` of an SDK app does."""
    sock.Send(buf, n)
    sock.Recv(buf, None, True)


def _fresh_echo() -> Callable[[Any, Any, int], None]:
    """`_echo` with a code object of its own: the interpreter specializes per code object,
    so each test warms (and reads) its own."""
    fn: Callable[[Any, Any, int], None] = types.FunctionType(_echo.__code__.replace(), globals())
    return fn


ROUNDS = 200
"""Echo round trips: far more than the interpreter waits before it specializes."""


def _method_loads(fn: Callable[..., Any]) -> dict[str, str]:
    """The (adaptive) instruction that loads each of `Send` and `Recv` in `fn`."""
    return {
        i.argval: i.opname
        for i in dis.get_instructions(fn, adaptive=True)
        if i.argval in ("Send", "Recv")
    }


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11),
    reason="the specialized instructions' names are CPython 3.11's (3.12+ names differ)",
)
@pytest.mark.parametrize("kind", ["tcp", "local", "tls", "udp"])
def test_the_apps_send_and_recv_calls_specialize(
    mux: Mux, log: IInstanceLog, kind: str, ca: Any, short_tmp: str
) -> None:
    """An echo over each kind, `ROUNDS` round trips: the app's `sock.Send(...)` and
    `sock.Recv(...)` end up as `LOAD_METHOD_NO_DICT` (an object with an instance dict
    keeps them `LOAD_METHOD_ADAPTIVE`: every call looks the method up again), and every
    byte came back."""
    echo = _fresh_echo()
    msg = os.urandom(64)
    total = len(msg) * ROUNDS
    if kind == "udp":
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind(("127.0.0.1", 0))
        raw.setblocking(False)
        mux.loop.add_reader(raw.fileno(), lambda: raw.sendto(*raw.recvfrom(2048)))
        crec = Recorder("client")
        client = CreateUDPSocketProvider().CreateSocket(mux, crec, log)
        client.Connect(f"127.0.0.1:{raw.getsockname()[1]}")
        mux.run_until(lambda: "connect" in crec.names(), what="connect")
    else:
        pair = make_pair(mux, log, _stream_kind(kind, ca), short_tmp)
        client, crec = pair.client, pair.crec
        pair.srec.hooks["recv"] = echo
        pair.server.Recv(bytearray(len(msg)), None, True)

    def on_client_recv(s: Any, b: Any, n: int) -> None:
        if len(crec.received) < total:
            echo(s, b, n)

    crec.hooks["recv"] = on_client_recv
    client.Recv(bytearray(len(msg)), None, True)
    client.Send(msg)
    try:
        mux.run_until(lambda: len(crec.received) >= total, timeout=20, what="the echo")
        assert bytes(crec.received) == msg * ROUNDS
        loads = _method_loads(echo)
        assert loads == {"Send": "LOAD_METHOD_NO_DICT", "Recv": "LOAD_METHOD_NO_DICT"}, (
            type(client).__name__,
            loads,
        )
    finally:
        if kind == "udp":
            mux.loop.remove_reader(raw.fileno())
            raw.close()
            client.Delete()
        else:
            close_pair(mux, pair)


@pytest.mark.parametrize("kind", ["tcp", "local", "tls"])
def test_the_transport_gets_the_socket_or_its_events(
    mux: Mux, log: IInstanceLog, kind: str, ca: Any, short_tmp: str
) -> None:
    """Where the loop asks for an `asyncio.BufferedProtocol` (asyncio's socket transport,
    asyncio's SSL layer) the transport's protocol is the compiled socket's `_Events`,
    whose events are the socket's own methods, or the pure build's socket itself (an
    `asyncio.BufferedProtocol` there); uvloop takes the socket itself (or, in the pure
    build, the `_AreaReader` of a plain stream)."""
    from usocket_asyncio._stream import _AreaReader, _Events

    pair = make_pair(mux, log, _stream_kind(kind, ca), short_tmp)
    try:
        for sock in (pair.client, pair.server):
            inner: Any = sock
            tr = inner._tr
            if kind == "tls":
                # the SSL layer's app protocol, as the TCP transport's SSL protocol has it
                tr = tr._ssl
            proto = tr.get_protocol()
            if mux.kind == "uvloop":
                assert proto is inner or (type(proto) is _AreaReader and proto.sock is inner)
            elif not usocket_asyncio.COMPILED:
                assert proto is inner and isinstance(inner, asyncio.BufferedProtocol)
            else:
                assert isinstance(proto, asyncio.BufferedProtocol) and type(proto) is _Events
                assert proto.sock is inner
                for name in ("get_buffer", "buffer_updated", "eof_received", "connection_lost"):
                    assert getattr(proto, name) == getattr(sock, name), name
    finally:
        close_pair(mux, pair)
