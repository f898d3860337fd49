"""`IDtls` calls made inside `UDtls` callbacks: every call of the engine's, from inside
every callback, on either side of two engines back to back on a simulated clock
(`kit.dtls.SimNet`, no loop, no real clock).

Each case runs a whole association (handshake, a record each way, the client's
`DtlsClose`) with the one call made inside the first callback of its kind, and checks:
- no callback runs inside another: what a call inside a callback causes comes after
  that callback returned;
- the datagrams a call produces reach `DtlsSend` before any event it causes: a record
  sent inside a callback is the next `DtlsSend`, and `DtlsClose` gives the close_notify
  before `DtlsConnectionClosed(0)`, and the peer sees it;
- nothing after `DtlsConnectionClosed`; nothing but one `DtlsTimerStop` after
  `DtlsAbortConnect`; no timer left running at the end;
- a call the app makes knowing the association is over (`DtlsSendApplicationData` after
  its `DtlsClose`, inside `DtlsConnectionClosed`) or before `DtlsConnected` raises
  `SocketModeError`; the other calls after the end do nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kit.dtls import OWN_FP, SRTP, SimNet, SimSide, record_kind
from kit.loop import R

from usocket_asyncio import SocketModeError

STUN = bytes([0, 1, 0, 0]) + bytes.fromhex("2112a442") + bytes(12)

CALLBACKS = [
    "send_handshake",  # the first DtlsSend (a handshake flight)
    "send",  # the first DtlsSend after DtlsConnected (a record)
    "timer_start",
    "timer_stop",
    "keys",
    "connected",
    "data",
    "closed",
]
CALLS = [
    "DtlsSendApplicationData",
    "DtlsClose",
    "DtlsAbortConnect",
    "DtlsRecv",
    "DtlsTimeout",
    "DtlsUnpause",
]


def start(net: SimNet) -> None:
    net.s.eng.DtlsConnect(True, SRTP, "127.0.0.1", None, OWN_FP)
    net.c.eng.DtlsConnect(False, SRTP, "127.0.0.1", None, OWN_FP)


def quiet(net: SimNet) -> Callable[[], bool]:
    return lambda: not net.flight and net.c.timer_due is None and net.s.timer_due is None


def can_send(side: SimSide) -> bool:
    return side.connected and not side.over


def script(net: SimNet) -> None:
    """The association every case runs: handshake, ping, pong, the client closes (and
    the server, if the client could not)."""
    c, s = net.c, net.s
    start(net)
    net.run(lambda: (c.connected or c.over) and (s.connected or s.over) and not net.flight)
    if can_send(c):
        c.eng.DtlsSendApplicationData(b"ping")
        net.run(lambda: not net.flight)
    if can_send(s):
        s.eng.DtlsSendApplicationData(b"pong")
        net.run(lambda: not net.flight)
    if not c.over:
        c.close()
    net.run(quiet(net))
    if not s.over:
        s.close()
    net.run(quiet(net))


class Outcome:
    """What the call made inside the callback did, and the state just before it."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.result: Any = None
        self.connected = False
        self.over = False
        self.established = False
        self.made = False


def make_call(net: SimNet, side: SimSide, call: str, out: Outcome) -> None:
    out.made = True
    out.connected = side.connected
    out.over = side.over
    conn = side.eng._conn
    out.established = conn is not None and conn.established
    try:
        if call == "DtlsSendApplicationData":
            side.eng.DtlsSendApplicationData(b"inner")
        elif call == "DtlsClose":
            side.close()
        elif call == "DtlsAbortConnect":
            side.abort()
        elif call == "DtlsRecv":
            # the next datagram on its way here, as a socket delivers it; else a copy
            # of the last one (the network repeats), else STUN (not DTLS)
            data = net.take(side) or (side.received[-1] if side.received else STUN)
            side.received.append(data)
            out.result = side.eng.DtlsRecv(data, None, "127.0.0.1", 5000)
            assert out.result is (data is not STUN)
        elif call == "DtlsTimeout":
            side.timer_due = None  # the app's timer, if one ran, fired
            side.eng.DtlsTimeout()
        elif call == "DtlsUnpause":
            side.eng.DtlsUnpause()
    except SocketModeError as e:
        out.error = e


def after_hook(side: SimSide) -> list[tuple[Any, ...]]:
    """The callbacks after the hooked callback returned."""
    names = side.names()
    i = names.index("return")
    return [t for t in side.trace[i + 1 :] if t[0] not in ("DtlsClose", "aborted")]


def check_side(side: SimSide) -> None:
    assert not side.violations, (side.name, side.violations, side.trace)
    names = side.names()
    assert names.count("closed") <= 1, side.trace
    assert side.timer_due is None, ("a timer left running", side.name, side.trace)
    if "timer_start" in names:  # a handshake began (not only a stateless cookie answer)
        assert side.closed is not None or side.aborted, ("no end", side.name, side.trace)
    if side.closed is not None:
        last = [n for n in names if n not in ("hook", "return", "DtlsClose", "aborted")]
        assert last[-1] == "closed", side.trace
    # a DtlsClose made once connected sends the close_notify before DtlsConnectionClosed
    if "DtlsClose" in names and side.closed is not None:
        i = names.index("DtlsClose")
        j = names.index("closed")
        if j > i and "connected" in names[:i]:
            kinds = [record_kind(t[1]) for t in side.trace[i:j] if t[0] == "send"]
            assert any(k[0] == 21 and k[1] >= 1 for k in kinds), side.trace


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("callback", CALLBACKS)
@pytest.mark.parametrize("who", ["c", "s"])
def test_call_inside_callback(who: str, callback: str, call: str) -> None:
    net = SimNet()
    side = net.c if who == "c" else net.s
    peer = net.s if who == "c" else net.c
    out = Outcome()
    name = callback
    if callback == "send_handshake":
        name = "send"
    elif callback == "send":
        side.when = lambda: side.connected
    side.hook = (name, lambda sd: make_call(net, sd, call, out))
    script(net)
    assert out.made, f"{callback} never came on {who}: {side.trace}"
    check_side(net.c)
    check_side(net.s)
    after = after_hook(side)
    if call == "DtlsSendApplicationData":
        if out.over:
            assert out.error is not None and "over" in str(out.error)
        elif not out.connected:
            assert out.error is not None and "before DtlsConnected" in str(out.error)
        else:
            assert out.error is None
            # the record is the very next callback, before any event
            assert after[0][0] == "send" and record_kind(after[0][1]) == (23, 1), after
            assert b"inner" in peer.data
    else:
        assert out.error is None, out.error
    if call == "DtlsClose" and not out.over:
        # then: datagrams (the close_notify if the handshake was done), one
        # DtlsTimerStop if a timer ran, DtlsConnectionClosed(0), nothing more
        names = [t[0] for t in after]
        assert names[-1] == "closed" and side.closed == 0, after
        assert set(names[:-1]) <= {"send", "timer_stop"}, after
        assert names.count("timer_stop") <= 1
        if out.established:
            alerts = [t for t in after if t[0] == "send" and record_kind(t[1])[0] == 21]
            assert alerts and record_kind(alerts[0][1])[1] >= 1, after
            assert peer.closed == 0, peer.trace  # the peer got it
    if call == "DtlsAbortConnect" and not out.over:
        assert [t[0] for t in after] in ([], ["timer_stop"]), after
        assert side.closed is None
    if call in ("DtlsClose", "DtlsAbortConnect") and out.over:
        assert side.names().count("closed") <= 1


def test_close_inside_recv_application_data_sends_close_notify_first() -> None:
    """The issue's case: the client closes on the server's record and, like an app that
    closes its UDP socket in DtlsConnectionClosed, sends nothing after it: the
    close_notify must already be out, and the server must see it."""
    net = SimNet()
    c, s = net.c, net.s
    c.hook = ("data", lambda sd: sd.close())
    start(net)
    net.run(lambda: c.connected and s.connected and not net.flight)
    s.eng.DtlsSendApplicationData(b"bye")
    net.run(quiet(net))
    tail = [t[0] if t[0] != "send" else ("send", record_kind(t[1])) for t in c.trace[-6:]]
    assert tail == ["data", "hook", "DtlsClose", "return", ("send", (21, 1)), "closed"], c.trace
    assert c.closed == 0 and s.closed == 0
    assert not c.violations and not s.violations


def test_calls_inside_connection_closed() -> None:
    """Inside DtlsConnectionClosed (and after it) the app knows the association is
    over: sending raises, the rest does nothing and calls nothing back."""
    net = SimNet()
    c = net.c
    errors: list[str] = []

    def inside(sd: SimSide) -> None:
        with pytest.raises(SocketModeError, match="over") as e:
            sd.eng.DtlsSendApplicationData(b"late")
        errors.append(str(e.value))
        sd.eng.DtlsClose()
        sd.eng.DtlsAbortConnect()
        assert sd.eng.DtlsRecv(sd.received[-1], None, "127.0.0.1", 5000)
        sd.eng.DtlsTimeout()
        sd.eng.DtlsUnpause()

    c.hook = ("closed", inside)
    script(net)
    assert errors and "make a new IDtls" in errors[0]
    check_side(c)
    n = len(c.trace)
    inside(c)  # and the same after it
    assert len(c.trace) == n


def test_send_after_own_close_raises_before_the_close_is_reported() -> None:
    """DtlsClose inside a callback, then a send in the same callback: the app's
    mistake, raised at once, though DtlsConnectionClosed comes only after the callback."""
    net = SimNet()
    c = net.c
    seen: list[BaseException] = []

    def close_then_send(sd: SimSide) -> None:
        sd.close()
        try:
            sd.eng.DtlsSendApplicationData(b"after close")
        except SocketModeError as e:
            seen.append(e)
        assert sd.closed is None  # not yet: after this callback returns

    c.hook = ("data", close_then_send)
    script(net)
    assert len(seen) == 1 and "DtlsClose" in str(seen[0])
    assert c.closed == 0 and net.s.closed == 0
    assert b"after close" not in net.s.data


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("callback", ["send_handshake", "timer_stop", "closed"])
def test_call_inside_the_end_of_a_failed_handshake(callback: str, call: str) -> None:
    """The client pins a certificate the server does not have: its fatal alert goes to
    DtlsSend before DtlsTimerStop and DtlsConnectionClosed(SOCKET_TLS_HANDSHAKE_FAILED);
    a call made inside the last callbacks keeps every rule, and both sides end."""
    net = SimNet()
    c, s = net.c, net.s
    out = Outcome()
    name = "send" if callback == "send_handshake" else callback
    if callback == "send_handshake":
        c.when = lambda: any(t[0] == "send" for t in c.trace[:-1])  # the second flight
    c.hook = (name, lambda sd: make_call(net, sd, call, out))
    s.eng.DtlsConnect(True, SRTP, "127.0.0.1", None, OWN_FP)
    c.eng.DtlsConnect(False, SRTP, "127.0.0.1", None, bytes(32))
    net.run(quiet(net))
    assert out.made, c.trace
    check_side(c)
    check_side(s)
    failed = int(R.SOCKET_TLS_HANDSHAKE_FAILED)
    if not c.by_app:
        names = c.names()
        assert c.closed == failed, c.trace
        j = names.index("closed")
        alerts = [t for t in c.trace[:j] if t[0] == "send" and record_kind(t[1])[0] == 21]
        assert alerts, c.trace  # the fatal alert went out first ...
        assert s.closed == failed, s.trace  # ... and the server got it
    if call == "DtlsSendApplicationData":
        assert out.error is not None
