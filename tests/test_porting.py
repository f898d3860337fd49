"""What a port of SDK code relies on: the SDK's QoS values, a context from every provider,
a FromLoop mux that never stops the app's loop, a Close that leaves nothing behind, the
SDK's HexDump signature, and a warning for a misspelled callback."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kit.loop import LOOPS, Mux, Recorder, have_ipv6
from kit.streams import bound_port, captured_log, client, ended, listener

from usocket_asyncio import (
    LOG_APP,
    LOG_TCP,
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    CreateUDPSocketProvider,
    IInstanceLog,
    IIoMux,
    ISocket,
    ISocketContext,
    ISocketProvider,
    LogFlags,
    ShutdownReason,
    SocketModeError,
    USocket,
    USocketCallbackWarning,
)
from usocket_asyncio._base import LIVE

needs_ipv6 = pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback")


def kernel_socket(sock: ISocket) -> socket.socket:
    """The kernel socket under a connected TCP or a bound UDP library socket."""
    s: Any = sock
    raw = getattr(s, "_sock", None)  # UDP
    if raw is None:
        raw = s._tr.get_extra_info("socket")
    assert raw is not None
    return raw  # type: ignore[no-any-return]


def tos(sock: ISocket) -> int:
    raw = kernel_socket(sock)
    if raw.family == socket.AF_INET6:
        return int(raw.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
    return int(raw.getsockopt(socket.IPPROTO_IP, socket.IP_TOS))


# --------------------------------------------------------------------------- QoS


@pytest.mark.parametrize("v6", [False, pytest.param(True, marks=needs_ipv6)], ids=["v4", "v6"])
def test_set_qos_takes_the_sdk_values_on_tcp(mux: Mux, log: IInstanceLog, v6: bool) -> None:
    """Ported code writes SetQoS(1) (QOS_AUDIO_VIDEO in qostraffictype_t): the packets
    carry AF41, TOS 34 << 2; 2 is EF (46 << 2); 0 clears the mark."""
    prov = CreateTCPSocketProvider()
    host = "::1" if v6 else "127.0.0.1"
    lsock, lrec, accepted = listener(mux, log, prov, host, use_ipv6=v6)
    addr = f"[{host}]" if v6 else host
    csock, crec = client(mux, log, prov, f"{addr}:{bound_port(lrec)}", v6)
    mux.run_until(lambda: "connect" in crec.names() and bool(accepted))
    ssock, srec = accepted[0]
    csock.SetQoS(1)  # type: ignore[arg-type]  # an int, as the SDK's enum is
    assert tos(csock) == 34 << 2
    ssock.SetQoS(2)  # type: ignore[arg-type]
    assert tos(ssock) == 46 << 2
    csock.SetQoS(0)  # type: ignore[arg-type]
    assert tos(csock) == 0
    with pytest.raises(ValueError, match="QOS_AUDIO_VIDEO=1"):
        csock.SetQoS(34)  # type: ignore[arg-type]  # a DSCP is no traffic class
    ssock.Recv(bytearray(3))
    csock.Send(b"qos")
    mux.run_until(lambda: srec.received == b"qos")
    for s in (csock, ssock, lsock):
        s.Delete()


@pytest.mark.parametrize("v6", [False, pytest.param(True, marks=needs_ipv6)], ids=["v4", "v6"])
def test_set_qos_takes_the_sdk_values_on_udp(mux: Mux, log: IInstanceLog, v6: bool) -> None:
    rec = Recorder()
    sock = CreateUDPSocketProvider().CreateSocket(mux, rec, log, v6)
    sock.SetQoS(1)  # type: ignore[arg-type]  # before Bind: applied once open
    sock.Bind("::1" if v6 else "127.0.0.1", 0)
    mux.run_until(lambda: bool(rec.events))
    assert rec.names() == ["bind"]
    assert tos(sock) == 34 << 2
    sock.SetQoS(2)  # type: ignore[arg-type]
    assert tos(sock) == 46 << 2
    sock.Delete()


# --------------------------------------------------------------------------- contexts


PROVIDERS: dict[str, Callable[[], ISocketProvider]] = {
    "tcp": CreateTCPSocketProvider,
    "udp": CreateUDPSocketProvider,
    "local": CreateLocalSocketProvider,
    "tls": lambda: CreateTLSSocketProvider(None),
}


@pytest.mark.parametrize("kind", list(PROVIDERS))
def test_every_provider_makes_a_socket_context(log: IInstanceLog, kind: str) -> None:
    ctx = PROVIDERS[kind]().CreateSocketContext(log)
    assert isinstance(ctx, ISocketContext)
    ctx.SetALPNProtocols(["h2"])
    assert len(ctx.GetCertificateFingerprint()) == 32
    ctx.Delete()


def test_plain_sockets_ignore_a_context(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    """A TCP, UDP or local socket made with a context works as one made without."""
    tcp = CreateTCPSocketProvider()
    ctx = tcp.CreateSocketContext(log)
    ctx.EnableDTLS(True)  # meaningless here, and ignored
    lrec = Recorder("listener")
    lrec.hooks["bind"] = lambda s, a, p: s.Listen()
    lrec.hooks["listen"] = lambda s, a, p: s.Accept(None)
    lsock = tcp.CreateSocket(mux, lrec, log, False, ctx)
    lsock.Bind("127.0.0.1", 0)
    mux.run_until(lambda: bool(lrec.events))
    crec = Recorder("client")
    csock = tcp.CreateSocket(mux, crec, log, False, ctx)
    csock.Connect(f"127.0.0.1:{bound_port(lrec)}")
    ended(mux, crec)
    assert crec.names()[0] == "connect"  # denied after the connect: plain TCP, no TLS
    assert "listen" in lrec.names()
    urec = Recorder("udp")
    usock = CreateUDPSocketProvider().CreateSocket(mux, urec, log, False, ctx)
    usock.Bind("127.0.0.1", 0)
    drec = Recorder("local")
    dsock = CreateLocalSocketProvider().CreateSocket(mux, drec, log, False, ctx)
    dsock.Bind(f"{short_tmp}/ctx.sock")
    mux.run_until(lambda: bool(urec.events) and bool(drec.events))
    assert urec.names() == ["bind"] and drec.names() == ["bind"]
    for s in (csock, lsock, usock, dsock):
        s.Delete()


# --------------------------------------------------------------------------- IIoMux


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


class Greeter(USocket):
    """Connects, and terminates its mux when the socket ends (as SDK apps do)."""

    def __init__(self, mux: IIoMux) -> None:
        self.mux = mux
        self.reason: ShutdownReason | None = None

    def SocketConnectComplete(self, socket: ISocket) -> None:
        socket.Shutdown()

    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        self.reason = reason
        socket.Delete()
        self.mux.Terminate()


@pytest.mark.parametrize("kind", LOOPS)
def test_from_loop_terminate_never_stops_the_apps_loop(kind: str) -> None:
    """asyncio.run(main()) with a FromLoop mux whose user calls Terminate returns
    normally, with main's own result; the app's task goes on after Terminate.
    (The app's own asyncio.Runner is the point here, so no `mux` fixture.)"""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        iomux = IIoMux.FromLoop()
        srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        user = Greeter(iomux)
        sock = CreateTCPSocketProvider().CreateSocket(iomux, user, IInstanceLog())
        sock.Connect(f"127.0.0.1:{port}")
        with pytest.raises(RuntimeError, match=r"await iomux\.Terminated\(\)"):
            iomux.Run()
        await asyncio.wait_for(iomux.Terminated(), 10)
        await asyncio.sleep(0.01)  # the loop still runs after Terminate
        await iomux.Terminated()  # and a second wait returns at once
        srv.close()
        await srv.wait_closed()
        assert not errors, errors
        assert user.reason is ShutdownReason.SOCKET_SHUTDOWN_NORMAL
        return "main finished"

    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        assert runner.run(main()) == "main finished"


@pytest.mark.parametrize("kind", LOOPS)
def test_from_loop_terminate_from_another_thread(kind: str) -> None:
    async def main() -> None:
        iomux = IIoMux.FromLoop()
        t = threading.Thread(target=iomux.Terminate)
        t.start()
        await asyncio.wait_for(iomux.Terminated(), 10)
        t.join(10)

    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        runner.run(main())


def test_create_terminate_before_terminated_is_awaited(mux: Mux) -> None:
    """On a mux made by Create, Terminate stops Run and completes Terminated() too."""
    waited: list[bool] = []

    async def waiter() -> None:
        await mux.Terminated()
        waited.append(True)

    mux.loop.create_task(waiter())
    mux.loop.call_soon(mux.Terminate)
    mux.Run()
    mux.run_for(0.01)
    assert waited == [True]


@pytest.fixture
def unraisable() -> Iterator[list[Any]]:
    """What reached sys.unraisablehook (a ResourceWarning raised in a __del__)."""
    import sys

    seen: list[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = old


@pytest.mark.parametrize("kind", LOOPS)
def test_close_ends_open_sockets_quietly(
    kind: str, log: IInstanceLog, short_tmp: str, unraisable: list[Any]
) -> None:
    """Close on a mux with open TCP (listening, connected, connecting), UDP and local
    sockets: no ResourceWarning, no pending task destroyed, nothing in the exception
    handler, no callback. (Close closes the loop, so this test makes its own mux.)"""
    errors: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mux = IIoMux.Create(uvloop=kind == "uvloop")
        mux.loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tcp = CreateTCPSocketProvider()
        lrec, crec, srec, urec, drec = (Recorder(n) for n in ("l", "c", "s", "u", "d"))
        accepted: list[ISocket] = []
        lrec.hooks["bind"] = lambda s, a, p: s.Listen()
        lrec.hooks["listen"] = lambda s, a, p: s.Accept(srec)
        srec.hooks["accept"] = accepted.append
        lsock = tcp.CreateSocket(mux, lrec, log)
        lsock.Bind("127.0.0.1", 0)
        usock = CreateUDPSocketProvider().CreateSocket(mux, urec, log)
        usock.Bind("127.0.0.1", 0)
        dsock = CreateLocalSocketProvider().CreateSocket(mux, drec, log)
        dsock.Bind(f"{short_tmp}/close.sock")

        async def until(cond: Callable[[], bool]) -> None:
            for _ in range(5000):
                if cond():
                    return
                await asyncio.sleep(0.002)
            raise AssertionError("timed out")

        mux.loop.run_until_complete(until(lambda: bool(lrec.events and urec.events)))
        csock = tcp.CreateSocket(mux, crec, log)
        csock.Connect(f"127.0.0.1:{bound_port(lrec)}")
        mux.loop.run_until_complete(until(lambda: bool(accepted) and bool(crec.events)))
        accepted[0].Recv(bytearray(10))  # a pending Recv
        usock.Recv(bytearray(10))
        late = tcp.CreateSocket(mux, Recorder("late"), log)
        late.Connect(f"127.0.0.1:{bound_port(lrec)}")  # still connecting at Close
        before = [len(r.events) for r in (lrec, crec, srec, urec, drec)]
        mux.Close()
        assert mux.loop.is_closed()
        assert not [s for s in LIVE if getattr(s, "_mux", None) is mux]  # none held on
        del lsock, usock, dsock, csock, late
        accepted.clear()
        gc.collect()
        after = [len(r.events) for r in (lrec, crec, srec, urec, drec)]
    assert after == before  # no callback: Close deletes
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [
        str(w.message) for w in caught
    ]
    assert not errors, errors
    assert not unraisable, unraisable


@pytest.mark.parametrize("kind", LOOPS)
def test_close_on_a_from_loop_mux_ends_its_sockets_and_keeps_the_loop(
    kind: str, log: IInstanceLog, unraisable: list[Any]
) -> None:
    """In an asyncio app, Close deletes the mux's sockets; the app's loop runs on."""
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        mux = IIoMux.FromLoop()
        rec = Recorder()
        lsock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
        lsock.Bind("127.0.0.1", 0)
        usock = CreateUDPSocketProvider().CreateSocket(mux, Recorder(), log)
        usock.Bind("127.0.0.1", 0)
        while not rec.events:
            await asyncio.sleep(0.002)
        mux.Close()
        assert not loop.is_closed()
        assert not [s for s in LIVE if getattr(s, "_mux", None) is mux]
        await asyncio.sleep(0.01)  # the closes run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
            runner.run(main())
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not errors and not unraisable


# --------------------------------------------------------------------------- IInstanceLog


def test_hexdump_in_the_sdk_debug_form_says_how_to_write_it() -> None:
    """debug->HexDump(buf, len) carried over as is: a clear TypeError naming the
    signature, whether or not any flag is set."""
    for flags in (0, int(LOG_APP)):
        log = IInstanceLog(flags)
        with pytest.raises(TypeError, match=r"HexDump\(flag, buf, len=None\).*LOG_APP, buf, len"):
            log.HexDump(bytearray(b"hello"), 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="log flag must be an int"):
        IInstanceLog(1).Log("LOG_APP", "x")  # type: ignore[arg-type]


def test_hexdump_with_the_flag_first() -> None:
    log, lines = captured_log(LOG_APP)
    log.HexDump(LOG_APP, b"hello world", 5)
    assert "hexdump 5 bytes" in lines.text() and "hello" in lines.text()


def test_bad_connect_address_reason_text_is_logged_under_log_tcp(mux: Mux) -> None:
    """The README's advice: with LOG_TCP on, the reason's text is in the log."""
    log, lines = captured_log(LogFlags.LOG_TCP)
    rec = Recorder()
    sock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
    sock.Connect("127.0.0.1")
    ended(mux, rec)
    assert rec.events == [("shutdown", ShutdownReason.SOCKET_ADDRESS_INVALID)]
    assert "no port; write it as '127.0.0.1:port'" in lines.text()
    assert lines.lines[0].startswith(LOG_TCP.name or "")
    sock.Delete()


def test_iinstancelog_writes_to_logging() -> None:
    log = IInstanceLog(LOG_APP)
    assert log.logger is logging.getLogger("usocket_asyncio")


# --------------------------------------------------------------------------- USocket


def test_a_misspelled_callback_warns_with_the_closest_name() -> None:
    with pytest.warns(USocketCallbackWarning, match=r"SocketReceiveResult.*SocketRecvResult"):

        class App(USocket):
            def SocketReceiveResult(self, socket: ISocket, buf: Any, len: int) -> None:
                pass

            def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
                pass

    with pytest.warns(USocketCallbackWarning, match=r"SocketShutDown.*SocketShutdown"):

        class Other(App):
            def SocketShutDown(self, socket: ISocket, reason: ShutdownReason) -> None:
                pass

    del Other


def test_a_misspelled_callback_warning_points_at_its_definition() -> None:
    with pytest.warns(USocketCallbackWarning) as got:

        class App(USocket):
            def SocketConectComplete(self, socket: ISocket) -> None:
                pass

            def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
                pass

    assert len(got) == 1
    assert got[0].filename == __file__
    assert "did you mean SocketConnectComplete?" in str(got[0].message)
    del App


def test_a_socket_name_far_from_every_callback_lists_them() -> None:
    with pytest.warns(USocketCallbackWarning, match="the callbacks are SocketAcceptComplete"):

        class App(USocket):
            @staticmethod
            def SocketXyzzy() -> None:
                pass

            def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
                pass

    del App


def test_real_callbacks_and_other_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class App(USocket):
            count = 0
            SocketLimit = 10  # data, not a method

            def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
                pass

            def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
                pass

            def helper(self) -> None:
                pass

        class Sub(App):  # inherited names are not checked again
            def SocketSendResult(self, socket: ISocket) -> None:
                pass

    del Sub


def test_deleted_context_makes_no_more_sockets(mux: Mux, log: IInstanceLog) -> None:
    """ISocketContext.Delete(): using the context afterwards is a caller's mistake."""
    prov = CreateTLSSocketProvider(CreateTCPSocketProvider())
    ctx = prov.CreateSocketContext(log)
    ctx.Delete()
    with pytest.raises(SocketModeError, match="deleted"):
        prov.CreateSocket(mux, Recorder(), log, False, ctx)
    with pytest.raises(SocketModeError, match="deleted"):
        ctx.SetALPNProtocols(["h2"])
