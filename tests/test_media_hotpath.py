"""IMedia's per-packet path does no work an app cannot see the result of (the media
benchmark, benchmarks/media.py, counts each packet's instructions): the source address
becomes a string once per address, not once per datagram, and an app that keeps
`UMedia`'s no-op `MediaRtpSendResult` is not called with it for every packet."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kit.loop import Mux
from kit.media import (
    PACKETS,
    MediaRecorder,
    Sender,
    check_intact,
    close,
    connect,
    make,
    payload_for,
)

from usocket_asyncio import CreateMediaProvider, IInstanceLog, IMedia, LogFlags, UMedia, _media
from usocket_asyncio._iomux import call_user


@pytest.fixture
def mlog() -> IInstanceLog:
    return IInstanceLog(int(LogFlags.LOG_MEDIA))


class NoSendResult(MediaRecorder):
    """An app that keeps UMedia's MediaRtpSendResult (it does nothing)."""

    MediaRtpSendResult = UMedia.MediaRtpSendResult


def make_with(mux: Mux, log: IInstanceLog, user: MediaRecorder) -> tuple[IMedia, MediaRecorder]:
    media = CreateMediaProvider().CreateMedia(mux, user, log)
    media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    mux.run_until(lambda: user.initialized, what=f"{user.name}: initialized")
    assert user.config is not None
    return media, user


def send_both_ways(mux: Mux, a: Any, b: Any, until: Any) -> None:
    sa = Sender(mux, a[0], PACKETS, lambda i: payload_for(b"a", i))
    sb = Sender(mux, b[0], PACKETS, lambda i: payload_for(b"b", i))
    sa.start()
    sb.start()
    mux.run_until(lambda: sa.done and sb.done and until(), timeout=10)


def test_no_send_result_for_an_app_that_keeps_the_no_op(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[tuple[Any, str]] = []
    real = call_user

    def spy(loop: Any, fn: Any, *args: Any) -> Any:
        called.append((getattr(fn, "__self__", None), fn.__name__))
        return real(loop, fn, *args)

    monkeypatch.setattr(_media, "call_user", spy)
    a = make_with(mux, mlog, NoSendResult("a"))
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    send_both_ways(
        mux,
        a,
        b,
        lambda: (
            len(a[1].payloads) == PACKETS and len(b[1].payloads) == PACKETS and b[1].sent == PACKETS
        ),
    )
    check_intact(a[1], b"b")
    check_intact(b[1], b"a")
    names_a = [name for user, name in called if user is a[1]]
    names_b = [name for user, name in called if user is b[1]]
    assert names_a.count("MediaRtpRecvResult") == PACKETS
    assert "MediaRtpSendResult" not in names_a
    assert names_b.count("MediaRtpSendResult") == PACKETS  # an app with its own gets each
    assert a[0].counters.rtp_sent == PACKETS
    close(mux, a, b)


def test_the_source_address_is_made_a_string_once_per_address(
    mux: Mux, mlog: IInstanceLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make(mux, mlog, "a")
    b = make(mux, mlog, "b")
    connect(mux, a, b)
    strs = [0]
    real = ipaddress.IPv4Address.__str__

    def counting(self: ipaddress.IPv4Address) -> str:
        strs[0] += 1
        return real(self)

    monkeypatch.setattr(ipaddress.IPv4Address, "__str__", counting)
    send_both_ways(
        mux, a, b, lambda: len(a[1].payloads) == PACKETS and len(b[1].payloads) == PACKETS
    )
    monkeypatch.undo()
    check_intact(a[1], b"b")
    check_intact(b[1], b"a")
    # 2 x PACKETS datagrams arrived from one address each: a str() or two, not 80
    assert strs[0] <= 4, strs[0]
    close(mux, a, b)
