"""The user receives every callback it has, however it has it: a `unittest.mock.Mock`
(the usual way to unit-test an app), a user that forwards `Socket*` names through
`__getattr__` or `__getattribute__`, a method added to the class after its first
socket was made. On TCP, local, TLS, UDP and DTLS, both loops. (Callbacks set on the
instance: the conformance checks `check_callbacks_set_on_the_instance` and its
datagram twin, for every kind, the listener, accepted sockets and `SetUser`.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from kit.conformance import (
    DATAGRAM_KINDS,
    STREAM_KINDS,
    DatagramKind,
    StreamKind,
    call,
    dgram_client,
    dgram_server,
    dgram_wait,
    end_clean,
    tls_kind,
)
from kit.loop import USER_CALLBACKS, Mux, Recorder

from usocket_asyncio import IInstanceLog, ISocket, ShutdownReason, USocket

Make = Callable[[Recorder], Any]
"""Makes the user under test that passes every callback on to a Recorder."""


def as_mock(rec: Recorder) -> Any:
    """A `Mock(spec=USocket)` whose callbacks record (side_effect) into `rec`."""
    m = mock.Mock(spec=USocket)
    for name in USER_CALLBACKS:
        getattr(m, name).side_effect = getattr(rec, name)
    return m


class Forwards:
    """Not a USocket: `__getattr__` forwards every `Socket*` name to its target."""

    def __init__(self, target: Recorder) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("Socket"):
            return getattr(self.target, name)
        raise AttributeError(name)


class Intercepts(USocket):
    """A USocket whose `__getattribute__` sends every `Socket*` name to its target."""

    def __init__(self, target: Recorder) -> None:
        self.target = target

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("Socket"):
            return getattr(object.__getattribute__(self, "target"), name)
        return object.__getattribute__(self, name)

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        """(Reached through `__getattribute__`.)"""


def added_later(rec: Recorder) -> Any:
    """An instance of a class that had only SocketShutdown when its first socket was
    made (`_first_socket` below); its callbacks are added to the class afterwards."""
    cls = _late_class()
    user = cls()
    user.rec = rec
    return user


_LATE: list[type] = []


def _late_class() -> type:
    if not _LATE:

        class Late(USocket):
            rec: Recorder

            def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
                self.rec.SocketShutdown(socket, reason)

        _LATE.append(Late)
    return _LATE[0]


def _first_socket(mux: Mux, log: IInstanceLog, make: Make) -> None:
    """For `added_later`: a socket made (and deleted) while the class had no callback
    but SocketShutdown; then every callback is added to the class."""
    if make is not added_later:
        return
    cls = _late_class()
    for name in USER_CALLBACKS:
        if name != "SocketShutdown" and name in vars(cls):
            return  # added already, by an earlier test
    user = cls()
    user.rec = Recorder()
    STREAM_KINDS["tcp4"].provider().CreateSocket(mux, user, log).Delete()

    def forward(name: str) -> Any:
        return lambda self, *args: getattr(self.rec, name)(*args)

    for name in USER_CALLBACKS:
        if name != "SocketShutdown":
            setattr(cls, name, forward(name))


MAKERS: dict[str, Make] = {
    "mock": as_mock,
    "getattr": Forwards,
    "getattribute": Intercepts,
    "added-later": added_later,
}


def _stream_kind(name: str, ca: Any) -> StreamKind:
    return tls_kind(ca, "tls13") if name == "tls" else STREAM_KINDS[name]


@pytest.mark.parametrize("how", list(MAKERS))
@pytest.mark.parametrize("kind_name", ["tcp4", "local", "tls"])
def test_stream_users_however_written(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, kind_name: str, how: str
) -> None:
    """Listener (bind, listen), client (connect, send, recv), accepted socket (accept,
    send, recv, canceled) and a user set by SetUser: every callback reaches the
    Recorder behind the user."""
    make = MAKERS[how]
    _first_socket(mux, log, make)
    kind = _stream_kind(kind_name, ca)
    lrec = Recorder("listener")
    accepted: list[tuple[ISocket, Recorder]] = []
    srecs: list[Recorder] = []

    def srec_factory() -> Recorder:
        r = Recorder("server")
        srecs.append(r)
        return r

    # the listener and the accepted socket get the made user, which records into the
    # Recorders the kit checks
    prov = kind.provider()
    lsock = prov.CreateSocket(mux, make(lrec), log, kind.use_ipv6, kind.server_context(prov, log))

    def on_listen(sock: ISocket, a: str, p: int) -> None:
        r = srec_factory()
        r.hooks["accept"] = lambda s: accepted.append((s, r))
        sock.Accept(make(r))

    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = on_listen
    addr, port = kind.bind_args(short_tmp)
    lsock.Bind(addr, port)
    mux.run_until(lambda: bool(lrec.events), what="bind")
    assert lrec.names() == ["bind"], lrec.events
    address = kind.connect_address(lrec.events[0][1], lrec.events[0][2])
    crec = Recorder("client")
    cprov = kind.provider()
    client = cprov.CreateSocket(
        mux, make(crec), log, kind.use_ipv6, kind.client_context(cprov, log)
    )
    client.Connect(address, kind.server_name)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names(), what="connect+accept")
    server, srec = accepted[0]
    call(crec, client.Send, b"ping")
    call(srec, server.Recv, bytearray(4))
    mux.run_until(lambda: srec.received == b"ping" and crec.sends_done == 1, what="ping")
    b = bytearray(4)
    call(srec, server.Recv, b)
    call(srec, server.RecvCancel)
    mux.run_until(lambda: "canceled" in srec.names(), what="canceled")
    other = Recorder("other")
    call(srec, server.SetUser, make(other))
    call(other, server.Send, b"pong")
    call(crec, client.Recv, bytearray(4))
    mux.run_until(lambda: crec.received == b"pong" and other.sends_done == 1, what="pong")
    call(crec, client.Shutdown)
    call(other, server.Recv, bytearray(4))
    mux.run_until(lambda: other.shutdown is not None and crec.shutdown is not None)
    assert other.shutdown is ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
    assert lrec.names() == ["bind", "listen"]
    for r in (lrec, crec, srec, other):
        assert not r.violations, (r.name, r.violations)
    for s in (client, server, lsock):
        s.Delete()


@pytest.mark.parametrize("how", list(MAKERS))
@pytest.mark.parametrize("kind_name", ["udp4-bound", "udp-connected", "dtls"])
def test_datagram_users_however_written(
    mux: Mux, log: IInstanceLog, kind_name: str, how: str
) -> None:
    """Both ends of UDP (bound, connected) and DTLS (a listener's accepted peer): open,
    send and receive results, canceled, and a user set by SetUser."""
    make = MAKERS[how]
    _first_socket(mux, log, make)
    kind: DatagramKind = DATAGRAM_KINDS[kind_name]
    brecs: list[Recorder] = []

    def brec() -> Recorder:
        r = Recorder("b")
        brecs.append(r)
        return r

    lrec = Recorder("listener")
    srv = dgram_server(mux, log, kind, brec, lrec=_wrapped(make, lrec))
    a = dgram_client(mux, log, kind, srv.port, _wrapped(make, Recorder("a")))
    b = dgram_wait(mux, kind, a, srv)
    arec = _inner(a.rec)
    b.recv(bytearray(8))
    a.send(b"ping")
    mux.run_until(lambda: b.rec.received == b"ping" and arec.sends_done == 1, what="ping")
    a.recv(bytearray(8))
    call(arec, a.sock.RecvCancel)
    mux.run_until(lambda: "canceled" in arec.names(), what="canceled")
    other = Recorder("other")
    call(arec, a.sock.SetUser, make(other))
    a.recv(bytearray(8))
    b.send(b"pong")
    a.send(b"again")
    b.recv(bytearray(8))
    mux.run_until(lambda: other.received == b"pong" and other.sends_done == 1, what="other")
    if kind.listener:
        assert _inner(srv.rec).names() == ["bind", "listen"]
    end_clean([arec, other, *brecs], [a.sock, b.sock, srv.sock])


def _wrapped(make: Make, rec: Recorder) -> Any:
    """A Recorder stand-in the kit can read (events, hooks...) that is the made user:
    the kit calls the library with it as the user, so the socket sees `make(rec)`."""
    return _Proxy(make(rec), rec)


class _Proxy:
    """Passed where the kit wants a Recorder: the library sees `user` (its callbacks go
    through it to `rec`); the kit's reads of the recorder's state go to `rec`."""

    def __init__(self, user: Any, rec: Recorder) -> None:
        object.__setattr__(self, "_user", user)
        object.__setattr__(self, "_rec_", rec)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("Socket"):
            return getattr(object.__getattribute__(self, "_user"), name)
        return getattr(object.__getattribute__(self, "_rec_"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_rec_"), name, value)


def _inner(rec: Any) -> Recorder:
    return rec._rec_ if isinstance(rec, _Proxy) else rec  # type: ignore[no-any-return]
