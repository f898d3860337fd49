"""No byte lost, no false success: the stream sockets' edge cases (API.md, "No byte lost,
no false success").

- a large TLS `Send` is reported only once its records left for the kernel, and is not
  buffered whole inside the TLS layer;
- a strided view given to `Recv` is refused at once, and the connection carries on;
- a `Recv` buffer is the app's again once its result ran (it can be resized);
- every call from a thread other than the loop's raises `SocketModeError`;
- `SetUser(None)` raises; a second local `Bind` on a live path does not connect to it.

(Shutdown draining to a slow or a stalled reader is in tests/kit/conformance.py, for every
stream kind.)
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from typing import Any

import pytest
from kit.conformance import STREAM_KINDS as KINDS
from kit.conformance import Pair, call, close_pair, make_pair, tls_kind
from kit.loop import Mux, R, Recorder, rss
from kit.streams import from_another_thread, listener

from usocket_asyncio import (
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    IInstanceLog,
    ISocket,
    ITimer,
    UTimer,
)

MiB = 1024 * 1024


def pair(mux: Mux, log: IInstanceLog, kind: str, ca: Any, tmp: str) -> Pair:
    return make_pair(mux, log, tls_kind(ca, "tls13") if kind == "tls" else KINDS[kind], tmp)


# --------------------------------------------------------------------------- TLS sends


class _Hashing(Recorder):
    """A Recorder that hashes what it receives instead of keeping it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.h = hashlib.sha256()
        self.n = 0

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        self._rec("recv", len)
        self.h.update(memoryview(buf)[:len])
        self.n += len
        self._hook("recv", socket, buf, len)


def test_tls_large_send_is_reported_once_sent(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str
) -> None:
    """64 MiB in one TLS Send to a peer that reads nothing yet: no SocketSendResult (the
    kernel cannot hold it), and the process does not grow by the encrypted copy; then
    the peer reads it all, intact, and the result and a clean end follow."""
    log.SetLogFlags(0)
    p = pair(mux, log, "tls", ca, short_tmp)
    server_rec = _Hashing("server")
    p.server.SetUser(server_rec)
    data = random.Random(23).randbytes(64 * MiB)
    mux.run_for(0.05)
    before = peak = rss()
    call(p.crec, p.client.Send, data)
    for _ in range(10):
        mux.run_for(0.1)
        peak = max(peak, rss())
    assert p.crec.names() == ["connect"], "reported sent while the peer had read nothing"
    assert peak - before < 16 * MiB, f"grew by {(peak - before) / MiB:.0f} MiB"
    buf = bytearray(MiB)
    server_rec.hooks["recv"] = lambda s, b, n: s.Recv(buf, None, True)
    p.server.Recv(buf, None, True)
    mux.run_until(lambda: p.crec.sends_done == 1, timeout=60, what="the send result")
    # the result means the kernel has the rest: at most its buffers' worth is unread
    assert server_rec.n >= len(data) - 16 * MiB, f"reported with {server_rec.n} bytes read"
    mux.run_until(lambda: server_rec.n == len(data), timeout=60, what="the last byte")
    assert server_rec.h.hexdigest() == hashlib.sha256(data).hexdigest()
    call(p.crec, p.client.Shutdown)
    mux.run_until(lambda: p.crec.shutdown is not None and server_rec.shutdown is not None)
    assert p.crec.names() == ["connect", "send", "shutdown"]
    assert p.crec.shutdown is R.SOCKET_SHUTDOWN_NORMAL
    assert server_rec.shutdown is R.SOCKET_SHUTDOWN_BY_PEER
    assert not server_rec.violations
    close_pair(mux, p)


# --------------------------------------------------------------------------- Recv buffers


@pytest.mark.parametrize("kind", ["tcp4", "tls"])
def test_strided_recv_is_refused(
    mux: Mux, log: IInstanceLog, ca: Any, kind: str, short_tmp: str
) -> None:
    p = pair(mux, log, kind, ca, short_tmp)
    buf = bytearray(20)
    with pytest.raises(ValueError, match="contiguous"):
        p.server.Recv(memoryview(buf)[::2])
    call(p.crec, p.client.Send, b"0123456789")
    mux.run_for(0.05)
    with pytest.raises(ValueError, match="contiguous"):
        p.server.Recv(memoryview(buf)[::2], 5, True)
    got = bytearray(10)
    call(p.srec, p.server.Recv, memoryview(got))
    mux.run_until(lambda: "recv" in p.srec.names() or p.srec.shutdown is not None)
    assert p.srec.names() == ["accept", "recv"] and bytes(got) == b"0123456789"
    close_pair(mux, p)


@pytest.mark.parametrize("kind", ["tcp4", "local", "tls"])
def test_recv_buffer_is_the_apps_again_after_its_result(
    mux: Mux, log: IInstanceLog, ca: Any, kind: str, short_tmp: str
) -> None:
    """After SocketRecvResult / SocketRecvCanceled the app can resize the buffer, on every
    path: straight into the buffer (whole, part of it, partial), from held bytes, and a
    cancelled Recv."""
    p = pair(mux, log, kind, ca, short_tmp)
    outcome: list[str] = []

    def after(buf: bytearray, n: int) -> None:  # runs after the callback returned
        try:
            del buf[:n]
            buf.extend(b"z" * (n + 1))
            outcome.append("ok")
        except BufferError as e:
            outcome.append(repr(e))

    p.srec.hooks["recv"] = lambda s, b, n: mux.loop.call_soon(after, b, n)
    p.srec.hooks["canceled"] = lambda s, b: mux.loop.call_soon(after, b, 1)

    def step(recv: Any, send: bytes, first: str = "recv") -> None:
        count = len(outcome)
        if first == "send":
            call(p.crec, p.client.Send, send)
            mux.run_for(0.05)
            recv()
        else:
            recv()
            call(p.crec, p.client.Send, send)
        mux.run_until(lambda: len(outcome) > count, what="the result and the resize")

    step(lambda: p.server.Recv(bytearray(8)), b"12345678")  # whole buffer, direct
    step(lambda: p.server.Recv(bytearray(10), 4), b"abcd")  # part of it, direct
    step(lambda: p.server.Recv(bytearray(100), None, True), b"partial")  # partial
    step(lambda: p.server.Recv(bytearray(6)), b"held!!", first="send")  # from held bytes
    big = bytearray(64)
    step(lambda: (p.server.Recv(big, 32), p.server.Recv(bytearray(5))), b"q" * 37)  # queued
    cancel = bytearray(4)
    p.server.Recv(cancel)
    p.server.RecvCancel()
    mux.run_until(lambda: len(outcome) == 7, what="the cancel")
    assert outcome == ["ok"] * 7, outcome
    close_pair(mux, p)


# --------------------------------------------------------------------------- threads


def test_calls_from_another_thread_raise(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    p = make_pair(mux, log, KINDS["tcp4"], short_tmp)
    timer = ITimer(mux, UTimer())
    calls: dict[str, Any] = {
        "Send": lambda: p.client.Send(b"x"),
        "Recv": lambda: p.client.Recv(bytearray(1)),
        "RecvCancel": p.client.RecvCancel,
        "Shutdown": p.client.Shutdown,
        "SetUser": lambda: p.client.SetUser(Recorder()),
        "GetLocalAddress": p.client.GetLocalAddress,
        "Delete": p.client.Delete,
        "Listen": p.listener.Listen,
        "CreateSocket": lambda: CreateTCPSocketProvider().CreateSocket(mux, Recorder(), log),
        "ITimer.Start": lambda: timer.Start(10),
        "ITimer.Cancel": timer.Cancel,
    }
    said = from_another_thread(mux, calls)
    for name in calls:
        assert "call_soon_threadsafe" in said[name], (name, said[name])
    # nothing happened: the socket works, from the loop's thread
    call(p.srec, p.server.Recv, bytearray(2))
    call(p.crec, p.client.Send, b"ok")
    mux.run_until(lambda: "recv" in p.srec.names())
    assert p.srec.received == b"ok" and p.crec.names() == ["connect", "send"]
    # while the loop is not running, another thread may call (it takes effect when it runs)
    other = threading.Thread(target=lambda: said.update(addr=str(p.client.GetLocalAddress())))
    other.start()
    other.join()
    assert said["addr"].startswith("('127.0.0.1'")
    # and Terminate() is for any thread
    mux.loop.call_later(0.05, lambda: threading.Thread(target=mux.Terminate).start())
    mux.Run()
    close_pair(mux, p)


# --------------------------------------------------------------------------- the rest


def test_set_user_none_raises(mux: Mux, log: IInstanceLog) -> None:
    rec = Recorder()
    sock = CreateTCPSocketProvider().CreateSocket(mux, rec, log)
    with pytest.raises(TypeError, match="Delete"):
        sock.SetUser(None)  # type: ignore[arg-type]
    call(rec, sock.Shutdown)  # the old user still gets the callbacks
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.events == [("shutdown", R.SOCKET_SHUTDOWN_NORMAL)]
    sock.Delete()


def test_second_local_bind_does_not_connect_to_the_listener(
    mux: Mux, log: IInstanceLog, short_tmp: str
) -> None:
    path = os.path.join(short_tmp, "live")
    prov = CreateLocalSocketProvider()
    first, lrec, accepted = listener(mux, log, prov, path)
    rec = Recorder("second")
    second = prov.CreateSocket(mux, rec, log)
    call(rec, second.Bind, path)
    mux.run_until(lambda: rec.shutdown is not None, what="the second bind")
    mux.run_for(0.1)
    assert rec.events == [("shutdown", R.SOCKET_ADDR_IN_USE)]
    assert lrec.names() == ["bind"], "the first listener saw a connection nobody made"
    # the first listener still serves
    client = prov.CreateSocket(mux, Recorder("client"), log)
    client.Connect(path)
    mux.run_until(lambda: bool(accepted), what="a real connection")
    assert lrec.names() == ["bind", "listen"]
    for s in (client, accepted[0][0], second, first):
        s.Delete()


def test_unix_path_live_reads_the_table(tmp_path: Any) -> None:
    from usocket_asyncio._stream import unix_path_live

    table = tmp_path / "unix"
    head = "Num       RefCount Protocol Flags    Type St Inode Path\n"
    rows = [
        "0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/listening\n",
        "0000000000000000: 00000003 00000000 00000000 0001 03 12 /run/connected\n",
        "0000000000000000: 00000002 00000000 00000000 0002 01 13 /run/datagram\n",
        "0000000000000000: 00000002 00000000 00010000 0001 01 14 rel/sock\n",
        "0000000000000000: 00000002 00000000 00010000 0001 01 15 @abstract\n",
        "0000000000000000: 00000002 00000000 00010000 0001 01 16\n",
    ]
    table.write_text(head + "".join(rows))
    assert unix_path_live("/run/listening", str(table)) is True
    assert unix_path_live("/run/connected", str(table)) is False  # a stale file's old peers
    assert unix_path_live("/run/datagram", str(table)) is True
    assert unix_path_live("/srv/rel/sock", str(table)) is True  # maybe the same file
    assert unix_path_live("/run/abstract", str(table)) is False
    assert unix_path_live("/run/other", str(table)) is False
    assert unix_path_live("/run/x", str(tmp_path / "missing")) is None


@pytest.mark.parametrize("version", ["tls12", "tls13"])
def test_tls_close_notify_while_the_reader_is_behind_loses_nothing(
    mux: Mux, log: IInstanceLog, ca: Any, short_tmp: str, version: str
) -> None:
    """The sender shuts down with megabytes queued while the reader takes 16 KiB every
    15 ms (default kernel buffers): its close_notify arrives while the reader's socket
    still holds bytes and has paused the transport. What the SSL object still holds must
    be read into the hold then, not lost on a full one: every byte arrives (hash equal),
    then BY_PEER, with nothing in the loop's exception handler."""
    from kit.conformance import SLOW_PAUSE, SLOW_READ

    p = make_pair(mux, log, tls_kind(ca, version), short_tmp)
    data = random.Random(23).randbytes(int(3.6 * 1024 * 1024))
    buf = bytearray(SLOW_READ)

    def again(s: ISocket) -> None:
        if p.srec.shutdown is None:
            s.Recv(buf, None, True)

    p.srec.hooks["recv"] = lambda s, b, n: mux.loop.call_later(SLOW_PAUSE, again, s)
    call(p.crec, p.client.Send, data)
    call(p.crec, p.client.Shutdown)
    call(p.srec, p.server.Recv, buf, None, True)
    mux.run_until(lambda: p.srec.shutdown is not None, timeout=40, what="the reader's end")
    assert hashlib.sha256(p.srec.received).hexdigest() == hashlib.sha256(data).hexdigest(), (
        f"{len(p.srec.received)} of {len(data)} bytes, then {p.srec.shutdown!r}"
    )
    assert p.srec.shutdown is R.SOCKET_SHUTDOWN_BY_PEER
    close_pair(mux, p)
