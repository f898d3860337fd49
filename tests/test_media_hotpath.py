"""IMedia's per-packet path does no work an app cannot see the result of (the media
benchmark, benchmarks/media.py, counts each packet's instructions): the source address
becomes a string once per address, not once per datagram."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kit.loop import Mux
from kit.media import (
    PACKETS,
    Sender,
    check_intact,
    close,
    connect,
    make,
    payload_for,
)

from usocket_asyncio import IInstanceLog, LogFlags


@pytest.fixture
def mlog() -> IInstanceLog:
    return IInstanceLog(int(LogFlags.LOG_MEDIA))


def send_both_ways(mux: Mux, a: Any, b: Any, until: Any) -> None:
    sa = Sender(mux, a[0], PACKETS, lambda i: payload_for(b"a", i))
    sb = Sender(mux, b[0], PACKETS, lambda i: payload_for(b"b", i))
    sa.start()
    sb.start()
    mux.run_until(lambda: sa.done and sb.done and until(), timeout=10)


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
