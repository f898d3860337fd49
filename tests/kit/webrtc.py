"""aiortc as a test peer of IMedia, on loopback only.

aiortc (and aioice under it) would gather on every interface and ask a public STUN
server: `AiortcPeer` always builds `RTCPeerConnection(RTCConfiguration(iceServers=[]))`,
and the `loopback_only` fixture patches `aioice.ice.get_host_addresses` to return
["127.0.0.1"], so that no datagram goes anywhere but loopback.

`ToneTrack` is an audio track that produces a sine of a known frequency in 20 ms frames of
8 kHz mono (paced by the loop's clock, as aiortc's own tracks); `AiortcPeer` keeps every
frame of the track it receives, so a test can check what arrived by its frequency.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from .loop import Mux, wake
from .media import FRAME, RATE, tone


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """aioice gathers host candidates on 127.0.0.1 only."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


class ToneTrack(MediaStreamTrack):
    """An audio track: a `freq` Hz sine, 20 ms frames of 8 kHz mono s16."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self.freq = freq
        self.n = 0
        self.start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        else:
            wait = self.start + self.n * FRAME / RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = tone(self.freq, self.n * FRAME, FRAME)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.n * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += 1
        return frame


class AiortcPeer:
    """One aiortc peer connection with a `ToneTrack` to send and a sink for what it gets."""

    def __init__(self, mux: Mux, freq: float) -> None:
        self.mux = mux
        self.track = ToneTrack(freq)
        # made inside the running loop: aiortc's sender and receiver keep the loop they
        # were made on
        self.pc: RTCPeerConnection = self.run(self._make())
        self.frames: list[np.ndarray[Any, Any]] = []
        self.rates: set[int] = set()
        self.tasks: list[asyncio.Task[Any]] = []
        self.pc.on("track", self._on_track)

    async def _make(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self.track)
        return pc

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.ensure_future(self._sink(track)))

    async def _sink(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            self.rates.add(frame.sample_rate)
            pcm = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                pcm = pcm[::2]
            self.frames.append(pcm.astype(np.int16))
            wake()

    def run(self, coro: Any) -> Any:
        return self.mux.loop.run_until_complete(coro)

    def offer(self) -> str:
        """Make and set the local offer; its SDP (with the candidates gathered)."""
        self.run(self.pc.setLocalDescription(self.run(self.pc.createOffer())))
        return str(self.pc.localDescription.sdp)

    def answer(self, offer: str) -> str:
        """Take `offer` and give the answer's SDP."""
        self.run(self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer")))
        self.run(self.pc.setLocalDescription(self.run(self.pc.createAnswer())))
        return str(self.pc.localDescription.sdp)

    def take_answer(self, answer: str) -> None:
        """Set the answer in the background (aiortc's ICE and DTLS run from there)."""
        self.tasks.append(
            self.mux.loop.create_task(
                self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            )
        )

    def received(self, skip: int = 5) -> np.ndarray[Any, Any]:
        """The samples received, without the first `skip` frames (the jitter buffer's start)."""
        if len(self.frames) <= skip:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.frames[skip:])

    def stats(self) -> dict[str, Any]:
        """getStats() by type (the last of each)."""
        report = self.run(self.pc.getStats())
        return {s.type: s for s in report.values()}

    def close(self) -> None:
        self.track.stop()
        self.run(self.pc.close())
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            self.run(asyncio.wait(self.tasks, timeout=2.0))
