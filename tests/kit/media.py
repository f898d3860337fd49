"""IMedia test scaffolding: a recording `UMedia`, tones in G.711, the frequency of what
arrived, and a paced sender.

`MediaRecorder` records every callback as (name, *args), wakes `Mux.run_until`, keeps the
payloads it received (with their timestamps and `sequenceNumberDiff`s) and keeps a `Recv`
posted once connected, and notes contract violations: a callback inside the app's own call
(`in_call`), anything after `MediaCloseComplete`.

G.711 here is written from the ITU tables' formulas with numpy (not the library's): the
tests check the library's audio against an independent codec.
"""

from __future__ import annotations

import hashlib
import math
import socket
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from usocket_asyncio import (
    SETUP_ROLE_ACTIVE,
    SETUP_ROLE_ACTPASS,
    AudioCoder,
    Codec,
    CreateMediaProvider,
    IceCandidate,
    IInstanceLog,
    IIoMux,
    IMedia,
    ITimer,
    MediaConfig,
    MediaType,
    UMedia,
    UTimer,
)

from .loop import Mux, wake
from .relays import DatagramFaults, DatagramRelay

RATE = 8000
FRAME = 160  # samples per 20 ms packet at 8 kHz


# --------------------------------------------------------------------------- G.711 mu-law


def ulaw_encode(samples: np.ndarray[Any, Any]) -> bytes:
    """16-bit linear PCM -> G.711 mu-law bytes (ITU-T G.711, the usual bias-and-segment form)."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    exp = np.clip(exp, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    out = ~(sign | (exp << 4) | mant) & 0xFF
    return bytes(out.astype(np.uint8))


def ulaw_decode(data: bytes) -> np.ndarray[Any, Any]:
    """G.711 mu-law bytes -> 16-bit linear PCM."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exp = (u >> 4) & 0x07
    mant = u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def tone(
    freq: float, start: int, n: int, rate: int = RATE, amp: float = 8000.0
) -> np.ndarray[Any, Any]:
    """`n` samples of a sine at `freq` Hz, from sample index `start` (phase-continuous)."""
    t = (np.arange(start, start + n) / rate).astype(np.float64)
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.int16)


def dominant_frequency(samples: np.ndarray[Any, Any], rate: int = RATE) -> float:
    """The frequency (Hz) with the most energy in `samples` (a Hann-windowed FFT)."""
    x = samples.astype(np.float64)
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def payload_for(seed: bytes, i: int, n: int = FRAME) -> bytes:
    """The `i`-th payload of a hashed sequence: each checks its own content and place."""
    out = b""
    k = 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(4, "big") + k.to_bytes(2, "big")).digest()
        k += 1
    return out[:n]


# --------------------------------------------------------------------------- the recorder


class MediaRecorder(UMedia):
    """A UMedia that records its callbacks (see the module docstring)."""

    def __init__(self, name: str = "", recv_size: int = 2048, auto_recv: bool = True) -> None:
        self.name = name
        self.events: list[tuple[Any, ...]] = []
        self.violations: list[str] = []
        self.in_call = False
        self.closed = False
        self.config: Any = None
        self.initialized = False
        self.connect_error: str | bool | None = False  # False: no result yet
        self.payloads: list[bytes] = []
        self.timestamps: list[int] = []
        self.diffs: list[int] = []
        self.markers: list[bool] = []
        self.ssrcs: list[tuple[str, int, int, int]] = []
        self.sent = 0
        self.stats: list[Any] = []
        self.errors: list[Any] = []
        self.dtmf: list[tuple[str, str]] = []
        self.recv_size = recv_size
        self.auto_recv = auto_recv
        self.hooks: dict[str, Callable[..., Any]] = {}

    def _rec(self, *ev: Any) -> None:
        if self.in_call:
            self.violations.append(f"{ev[0]} ran inside a library call")
        if self.closed:
            self.violations.append(f"{ev[0]} after MediaCloseComplete")
        self.events.append(ev)
        wake()
        fn = self.hooks.get(ev[0])
        if fn is not None:
            fn(*ev[1:])

    def names(self) -> list[str]:
        return [e[0] for e in self.events]

    @property
    def connected(self) -> bool:
        return self.connect_error is None

    def MediaInitializeComplete(self, media: IMedia, localMediaConfig: Any) -> None:
        self.config = localMediaConfig
        self.initialized = True
        self._rec("init", localMediaConfig)

    def MediaConnectResult(self, media: IMedia, error: str | None) -> None:
        self.connect_error = error
        if error is None and self.auto_recv:
            media.Recv(bytearray(self.recv_size))
        self._rec("connect", error)

    def MediaRtpSendResult(self, media: IMedia) -> None:
        self.sent += 1
        self._rec("sent")

    def MediaRtpRecvResult(
        self,
        media: IMedia,
        buf: Any,
        len: int,
        timestamp: int,
        sequenceNumberDiff: int,
        marker: bool,
    ) -> None:
        self.payloads.append(bytes(buf[:len]))
        self.timestamps.append(timestamp)
        self.diffs.append(sequenceNumberDiff)
        self.markers.append(marker)
        self._rec("recv", len)
        if self.auto_recv and not self.closed:
            media.Recv(buf)

    def MediaRtpRecv(self, media: IMedia, src_addr: str, src_port: int, ssrc: int, pt: int) -> None:
        self.ssrcs.append((src_addr, src_port, ssrc, pt))
        self._rec("ssrc", src_addr, src_port, ssrc, pt)

    def MediaEventReceived(self, media: IMedia, event: Any, ctx: Any) -> None:
        from usocket_asyncio import CHANNEL_MEDIA_ERROR

        if event == CHANNEL_MEDIA_ERROR:
            self.errors.append(ctx)
        else:
            self.stats.append(ctx)
        self._rec("event", event, ctx)

    def MediaRtpDtmfNearStart(self, digit: str) -> None:
        self.dtmf.append(("start", digit))
        self._rec("dtmf_start", digit)

    def MediaRtpDtmfNear(self, digit: str) -> None:
        self.dtmf.append(("end", digit))
        self._rec("dtmf_end", digit)

    def MediaCloseComplete(self, media: IMedia) -> None:
        self._rec("closed")
        self.closed = True

    def error_codes(self) -> list[int]:
        return [int(e.code) for e in self.errors]


class Sender(UTimer):
    """Sends `count` payloads on `media`, one every `ms` milliseconds (an `ITimer`
    restarted each time: the test needs no drift-free pace). `make(i)` gives the i-th
    payload; timestamps advance by `FRAME` per packet from `ts0`."""

    def __init__(
        self,
        iomux: IIoMux,
        media: IMedia,
        count: int,
        make: Callable[[int], bytes],
        ms: int = 20,
        ts0: int = 1000,
    ) -> None:
        self.media = media
        self.count = count
        self.make = make
        self.ms = ms
        self.ts0 = ts0
        self.i = 0
        self.timer = ITimer(iomux, self)

    def start(self) -> None:
        self.timer.Start(0)

    @property
    def done(self) -> bool:
        return self.i >= self.count

    def TimerOnTimeout(self, timer: ITimer) -> None:
        if self.i >= self.count:
            return
        self.media.RtpSend(self.make(self.i), None, self.ts0 + self.i * FRAME)
        self.i += 1
        wake()
        if self.i < self.count:
            self.timer.Start(self.ms)

    def stop(self) -> None:
        self.timer.Cancel()


def tone_payload(freq: float) -> Callable[[int], bytes]:
    """`make(i)` for a `Sender`: 20 ms of a phase-continuous tone in mu-law."""
    return lambda i: ulaw_encode(tone(freq, i * FRAME, FRAME))


# --------------------------------------------------------------------------- calls

PACKETS = 40
"""Payloads each way in a test call (0.8 s at 20 ms)."""

Side = tuple[IMedia, MediaRecorder]


def make(mux: Mux, log: IInstanceLog, name: str, **kw: Any) -> tuple[IMedia, MediaRecorder]:
    user = MediaRecorder(name)
    media = CreateMediaProvider().CreateMedia(mux, user, log)
    user.in_call = True
    media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"], **kw)
    user.in_call = False
    mux.run_until(lambda: user.initialized, what=f"{name}: initialized")
    assert user.config is not None, f"{name}: Initialize failed"
    assert user.names() == ["init"]
    return media, user


def connect(
    mux: Mux,
    a: tuple[IMedia, MediaRecorder],
    b: tuple[IMedia, MediaRecorder],
    a_controls: bool = True,
    b_controls: bool = False,
    cfg_for_a: Any = None,
    cfg_for_b: Any = None,
) -> None:
    """A offers (actpass), B answers active: B is the DTLS client."""
    (ma, ua), (mb, ub) = a, b
    ua.in_call = ub.in_call = True
    mb.Connect(cfg_for_b or ua.config, not b_controls, SETUP_ROLE_ACTPASS)
    ma.Connect(cfg_for_a or ub.config, not a_controls, SETUP_ROLE_ACTIVE)
    ua.in_call = ub.in_call = False
    mux.run_until(
        lambda: ua.connect_error is not False and ub.connect_error is not False,
        timeout=15,
        what="both connected",
    )
    assert ua.connect_error is None and ub.connect_error is None, (
        ua.connect_error,
        ub.connect_error,
    )


def close(mux: Mux, *pairs: tuple[IMedia, MediaRecorder]) -> None:
    for m, u in pairs:
        u.in_call = True
        m.Close()
        u.in_call = False
    mux.run_until(lambda: all(u.closed for _, u in pairs), what="MediaCloseComplete")
    mux.run_ready()
    for _, u in pairs:
        assert u.names()[-1] == "closed"
        assert u.violations == [], u.violations


def exchange(
    mux: Mux, a: tuple[IMedia, MediaRecorder], b: tuple[IMedia, MediaRecorder], n: int = PACKETS
) -> tuple[Sender, Sender]:
    """Each side sends `n` hashed payloads; wait until each got what it can get."""
    (ma, ua), (mb, ub) = a, b
    sa = Sender(mux, ma, n, lambda i: payload_for(b"a", i))
    sb = Sender(mux, mb, n, lambda i: payload_for(b"b", i))
    sa.start()
    sb.start()
    mux.run_until(lambda: sa.done and sb.done and ua.sent == n and ub.sent == n, timeout=10)
    return sa, sb


def check_intact(got: MediaRecorder, seed: bytes, n: int = PACKETS) -> None:
    assert got.payloads == [payload_for(seed, i) for i in range(n)]
    assert got.timestamps == [1000 + i * FRAME for i in range(n)]
    assert got.diffs == [1] * n
    assert got.markers[0] and not any(got.markers[1:])
    assert len(got.ssrcs) == 1 and got.names().index("ssrc") < got.names().index("recv")


def relayed_call(
    mux: Mux,
    log: IInstanceLog,
    up: DatagramFaults | None = None,
    down: DatagramFaults | None = None,
) -> tuple[Side, Side, DatagramRelay]:
    """A calls B through a `DatagramRelay` (A is its client): A knows B only as the
    relay's address, B knows no candidate of A and learns it (peer-reflexive) from the
    checks that come through the relay; so every datagram of the call passes the relay
    ("up" is A to B). Returns both sides, connected, and the relay (close it)."""
    import copy

    a = make(mux, log, "a")
    b = make(mux, log, "b")
    relay = DatagramRelay(mux.loop, f"127.0.0.1:{b[0].localPort}", up=up, down=down)
    host, port = relay.address.rsplit(":", 1)
    via_relay = copy.deepcopy(b[1].config)
    via_relay.ice.candidateList = [
        IceCandidate(host, int(port), int(port), 2130706431, 0, 0, "relay1")
    ]
    no_candidates = copy.deepcopy(a[1].config)
    no_candidates.ice.candidateList = []
    connect(mux, a, b, cfg_for_a=via_relay, cfg_for_b=no_candidates)
    return a, b, relay


def plain_config(port: int, dtmf: bool = True) -> MediaConfig:
    """The config of a plain RTP peer on 127.0.0.1:`port` (no ICE, no DTLS): G.711 µ-law,
    and telephone-event 101 unless `dtmf` is False."""
    codecs = [Codec(AudioCoder.G711_U, 0, 0, 8000)]
    if dtmf:
        codecs.append(Codec(AudioCoder.DTMF, 1, 101, 8000))
    return MediaConfig(MediaType.AUDIO, "127.0.0.1", port, None, codecs)


def count_slow(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the RTP packets that take the slow path (`IMedia._media_in`; RTCP, which
    always does and comes at random times, is not counted)."""
    slow = [0]
    real = IMedia._media_in

    def spy(self: IMedia, data: bytes, host: str, port: int) -> None:
        if not 192 <= data[1] <= 223:
            slow[0] += 1
        real(self, data, host, port)

    monkeypatch.setattr(IMedia, "_media_in", spy)
    return slow


def udp_peers(blocking: bool) -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two UDP sockets on loopback (plain RTP peers, or a peer and a stranger), closed
    when the generator ends: a fixture yields from it."""
    out = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(blocking)
        out.append(s)
    try:
        yield out[0], out[1]
    finally:
        for s in out:
            s.close()
