"""The receive target: where a stream socket's transport reads a pending `Recv`'s bytes.

With the compiled helper (`_fastsend.RecvTarget`), a TCP or local socket whose transport
reads in place (`_direct.recv_target`) hands it the part of the app's bytearray the
head `Recv` still wants, without an export of the bytearray: the kernel writes into the
app's buffer (no copy out of the loop's read area), and the app may still resize the
buffer inside `SocketRecvResult`. Without the helper (the pure build) uvloop reads into
the loop's read area and asyncio into the bytearray itself, as before.

What a user checks, on both loops and both builds: the bytes arrive whole and in order
for every shape of `Recv` (whole, partial, a shorter `len`, exact in pieces, a buffer
the app shrank while its `Recv` waited), a resize inside the callback works, and the
socket lets go of the buffer when it ends. Where the helper is built, the tests also
look at what `get_buffer` hands the transport.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from kit.conformance import STREAM_KINDS, Pair, call, close_pair, make_pair
from kit.loop import Mux

import usocket_asyncio
from usocket_asyncio import IInstanceLog, _direct

KINDS = ["tcp4", "local"]


@pytest.fixture(params=KINDS)
def pair(request: pytest.FixtureRequest, mux: Mux, log: IInstanceLog, short_tmp: str) -> Any:
    p = make_pair(mux, log, STREAM_KINDS[request.param], short_tmp)
    yield p
    close_pair(mux, p)


def inside(sock: Any) -> Any:
    """The library socket, for a look at its private fields."""
    return sock


def target_of(p: Pair) -> Any:
    return inside(p.server)._target


def handed(p: Pair) -> Any:
    """What the server socket's `get_buffer` hands its transport now (as a read would)."""
    return inside(p.server).get_buffer(-1)


# ----------------------------------------------------------------------------- the type


def test_the_target_points_into_the_bytearray_without_exporting_it() -> None:
    if _direct.RecvTarget is None:
        pytest.skip("the pure build has no compiled helper")
    t = _direct.RecvTarget()
    ba = bytearray(10)
    assert t.prepare(ba, 2, 8) is t and len(t) == 6
    view = memoryview(t)
    assert (view.nbytes, view.format, view.ndim, view.readonly) == (6, "B", 1, False)
    view[:] = b"abcdef"
    assert ba == b"\0\0abcdef\0\0"
    # the bytearray has no export: the app may resize it while the target is exported
    ba.extend(b"zz")
    del ba[:3]
    assert ba == b"bcdef\0\0zz"
    view.release()
    # each export looks at the storage anew
    assert t.prepare(ba, 0, 3) is t
    with memoryview(t) as v:
        v[:] = b"XYZ"
    assert ba == b"XYZef\0\0zz"
    assert t.prepare(ba, 1, -1) is t and len(t) == len(ba) - 1  # -1: to its end
    del ba[2:]  # shrunk below the prepared end: no export (never a write beyond it)
    with pytest.raises(BufferError):
        memoryview(t)
    for args in [
        (ba, 0, 3),
        (ba, 1, 1),
        (ba, -1, 1),
        (ba, 0, -2),
        (ba, 2, -1),
        (b"xy", 0, 1),
        (memoryview(ba), 0, 1),
    ]:
        assert t.prepare(*args) is None, args
        with pytest.raises(BufferError):
            memoryview(t)
    for other in [b"xy", memoryview(ba), bytearray()]:
        assert t.aim(other) is None
    assert t.aim(ba) is t and len(t) == len(ba)  # `aim`: all of it
    with memoryview(t) as v:
        v[:] = b"AB"
    assert ba == b"AB"
    assert t.prepare(ba, 0, 2) is t
    t.clear()
    assert len(t) == 0
    with pytest.raises(BufferError):
        memoryview(t)


# ----------------------------------------------------------------------------- sockets


def expected_reader(p: Pair, mux: Mux, whole: bool) -> str:
    """What `get_buffer` should hand the transport for a pending Recv into a bytearray:
    "app" (the bytearray itself, asyncio's selector transport, filled from its start),
    "target" (the helper's target) or "area" (the loop's read area)."""
    if mux.kind == "asyncio" and whole:
        return "app"
    return "target" if _direct.FAST else "area"


def reader_of(p: Pair, buf: bytearray, got: Any) -> str:
    if got is buf:
        return "app"
    if got is inside(p.server)._area:
        return "area"
    assert _direct.RecvTarget is not None and type(got) is _direct.RecvTarget, type(got)
    return "target"


def test_every_shape_of_recv_reads_where_it_should_and_arrives_whole(mux: Mux, pair: Pair) -> None:
    p = pair
    if _direct.FAST:
        assert target_of(p) is not None and inside(p.server)._taim is not None
    else:
        assert target_of(p) is None
    data = os.urandom(4000)
    off = 0

    def send(n: int) -> None:
        nonlocal off
        call(p.crec, p.client.Send, data[off : off + n])
        off += n

    # the whole buffer, partial
    a = bytearray(64)
    call(p.srec, p.server.Recv, a, None, True)
    assert reader_of(p, a, handed(p)) == expected_reader(p, mux, True)
    send(40)
    mux.run_until(lambda: len(p.srec.received) == 40, what="whole, partial")
    # a shorter len: the target ends there (the kernel reads no more than the Recv wants)
    b = bytearray(100)
    call(p.srec, p.server.Recv, b, 30)
    got = handed(p)
    assert reader_of(p, b, got) == expected_reader(p, mux, False)
    if reader_of(p, b, got) == "target":
        assert len(got) == 30
    send(50)  # 30 for this Recv, 20 held for the next
    mux.run_until(lambda: len(p.srec.received) == 70, what="a shorter len")
    assert bytes(b[:30]) == data[40:70] and b[30:] == bytes(70)
    c = bytearray(20)
    call(p.srec, p.server.Recv, c)
    mux.run_until(lambda: len(p.srec.received) == 90, what="the held rest")
    # exact, in pieces: the second read goes on where the first stopped
    d = bytearray(1000)
    call(p.srec, p.server.Recv, d)
    send(300)
    mux.run_until(lambda: inside(p.server)._rpos == 300, what="the first piece")
    got = handed(p)
    assert reader_of(p, d, got) == expected_reader(p, mux, False)
    if reader_of(p, d, got) == "target":
        assert len(got) == 700
        with memoryview(got) as v:  # it points at d[300:]
            assert v.nbytes == 700
    send(700)
    mux.run_until(lambda: len(p.srec.received) == 1090, what="exact, in pieces")
    assert bytes(d) == data[90:1090]
    assert bytes(p.srec.received) == data[:off]
    assert [e for e in p.srec.events if e[0] == "recv"] == [
        ("recv", 40),
        ("recv", 30),
        ("recv", 20),
        ("recv", 1000),
    ]


def test_a_buffer_shrunk_while_its_recv_waits(mux: Mux, pair: Pair) -> None:
    """The app shrinks the bytearray of a pending Recv before any byte came (it holds no
    export of it): the target refuses it (no read past its end); the bytes still
    arrive whole and in order."""
    p = pair
    data = os.urandom(3000)
    buf = bytearray(2000)
    call(p.srec, p.server.Recv, buf, None, True)
    del buf[500:]
    got = handed(p)
    if _direct.FAST:
        assert reader_of(p, buf, got) != "target"
    p.srec.hooks["recv"] = lambda s, b, n: (
        call(p.srec, s.Recv, bytearray(2000), None, True)
        if len(p.srec.received) < len(data)
        else None
    )
    call(p.crec, p.client.Send, data)
    mux.run_until(lambda: len(p.srec.received) == len(data), what="every byte")
    assert hashlib.sha256(p.srec.received).digest() == hashlib.sha256(data).digest()


def test_resizing_inside_the_callback_while_reads_go_on(mux: Mux, pair: Pair) -> None:
    """A parser's habit on every read (`del buf[:n]`, then grow it), with the next Recv
    into the same bytearray from inside the callback: nothing raises, every byte
    arrives in order, and the bytes land in the bytearray as it is now."""
    p = pair
    data = os.urandom(50_000)
    buf = bytearray(256)
    seen = bytearray()
    errors: list[BaseException] = []

    def on_recv(s: Any, b: Any, n: int) -> None:
        assert b is buf
        seen.extend(b[:n])
        try:
            del b[:n]
            b.extend(bytes(n + 7))  # a different size every time
        except BufferError as e:
            errors.append(e)
            return
        if len(seen) < len(data):
            call(p.srec, s.Recv, b, None, True)

    p.srec.hooks["recv"] = on_recv
    call(p.srec, p.server.Recv, buf, None, True)
    call(p.crec, p.client.Send, data)
    mux.run_until(lambda: len(seen) == len(data) or bool(errors), what="every byte")
    assert not errors, errors
    assert bytes(seen) == data


def test_the_same_buffer_again_after_its_storage_moved(mux: Mux, pair: Pair) -> None:
    """The usual echo: every Recv into the one bytearray. Where the helper's target reads
    (uvloop), a Recv into the buffer of the last read, of the same length, reads through
    the target as it was aimed (no call); the app's callback replaces the buffer's
    storage each time (the same length, the bytes elsewhere in memory): every byte
    still lands where the bytearray is now, whole and in order."""
    p = pair
    data = os.urandom(20_000)
    buf = bytearray(256)
    seen = bytearray()

    def on_recv(s: Any, b: Any, n: int) -> None:
        seen.extend(b[:n])
        b[:] = bytes(4096)  # a new, larger storage ...
        del b[256:]  # ... cut back to the length the target was aimed at
        if len(seen) < len(data):
            call(p.srec, s.Recv, b, None, True)

    p.srec.hooks["recv"] = on_recv
    call(p.srec, p.server.Recv, buf, None, True)
    call(p.crec, p.client.Send, data)
    mux.run_until(lambda: len(seen) == len(data), what="every byte")
    assert bytes(seen) == data
    # one more Recv into it: handed the target (or, on asyncio, the bytearray) twice
    call(p.srec, p.server.Recv, buf, None, True)
    first, again = handed(p), handed(p)
    assert again is first and reader_of(p, buf, again) == reader_of(p, buf, first)
    if reader_of(p, buf, again) == "target":
        assert inside(p.server)._taimed is buf and len(again) == len(buf)


def test_the_socket_lets_go_of_the_buffer(mux: Mux, pair: Pair) -> None:
    """The target keeps a reference to the bytearray it points at until the next read
    or the socket's end: Delete drops it."""
    p = pair
    buf = bytearray(64)
    call(p.srec, p.server.Recv, buf, None, True)
    handed(p)
    t = target_of(p)
    p.server.Delete()
    assert inside(p.server)._target is None and inside(p.server)._taim is None
    if t is not None:
        assert len(t) == 0


def test_a_read_size_with_no_pack_left(mux: Mux, pair: Pair) -> None:
    """Where the loop's read area is copied into the app's buffer (the pure build on
    uvloop), a read size met after the process made its last pack is copied by a
    slice: the bytes arrive whole all the same."""
    from usocket_asyncio import _stream

    p = pair
    sizes = (777, 778)
    saved = [_stream._PACKS[n] for n in sizes], _stream._PACK_BUDGET[0]
    for n in sizes:
        _stream._PACKS[n] = None
    _stream._PACK_BUDGET[0] = 1  # a pack for the first size, none for the second
    try:
        data = os.urandom(sum(sizes))
        off = 0
        for n in sizes:
            buf = bytearray(n)
            call(p.srec, p.server.Recv, buf)
            call(p.crec, p.client.Send, data[off : off + n])
            off += n
            want = off
            mux.run_until(lambda: len(p.srec.received) == want, what=f"{n} bytes")  # noqa: B023
            assert bytes(buf) == data[off - n : off]
        assert bytes(p.srec.received) == data
        if not _direct.FAST and mux.kind == "uvloop":
            assert _stream._PACKS[777] is not None and _stream._PACKS[778] is None
    finally:
        for n, pack in zip(sizes, saved[0], strict=True):
            _stream._PACKS[n] = pack
        _stream._PACK_BUDGET[0] = saved[1]


def test_held_bytes_and_exact_recvs_through_the_read_area(mux: Mux, pair: Pair) -> None:
    """The pure build on uvloop hands the transport `_AreaReader`, whose `get_buffer` is
    C (the loop's read area for every read, no Python frame); the socket sorts each read
    out itself: into the pending Recv, or to the hold when none is pending or bytes are
    held ahead. Elsewhere the socket is its transport's protocol (compiled, on asyncio,
    through its `_Events`, whose events are the socket's methods). Either way: bytes sent
    before any Recv, then exact Recvs across reads, then a partial one, then bytes
    that come while a Recv waits all arrive whole and in order."""
    import types

    p = pair
    proto = inside(p.server)._tr.get_protocol()
    if not _direct.FAST and mux.kind == "uvloop":
        assert type(proto).__name__ == "_AreaReader"
        assert not isinstance(proto.get_buffer, types.FunctionType | types.MethodType)
        assert proto.get_buffer(65536) is inside(p.server)._area
    elif mux.kind == "uvloop" or not usocket_asyncio.COMPILED:
        assert proto is inside(p.server)
    else:
        assert proto.sock is inside(p.server) and proto.get_buffer == inside(p.server).get_buffer
    data = os.urandom(200_000)
    call(p.crec, p.client.Send, data[:150_000])  # nothing pending: held (and paused)
    mux.run_until(lambda: inside(p.server)._hend - inside(p.server)._hstart > 0, what="held")
    got = bytearray()
    sizes = iter([7, 1000, 65536, 3, 40_000])

    def on_recv(s: Any, b: Any, n: int) -> None:
        got.extend(b[:n])
        size = next(sizes, None)
        if size is not None:
            call(p.srec, s.Recv, bytearray(size))  # exact
        elif len(got) < len(data):
            call(p.srec, s.Recv, bytearray(5000), None, True)

    p.srec.hooks["recv"] = on_recv
    call(p.srec, p.server.Recv, bytearray(11))
    mux.run_until(lambda: len(got) >= 106_557, what="the exact Recvs")
    call(p.crec, p.client.Send, data[150_000:])
    mux.run_until(lambda: len(got) == len(data), what="every byte")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
