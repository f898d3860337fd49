"""IMedia against aiortc 1.16 on loopback: aiortc offers and IMedia answers, IMedia offers
and aiortc answers, both DTLS roles, audio both ways checked by its frequency, RTCP
reports seen on both sides, close_notify at the end.

aiortc gathers on 127.0.0.1 only (`loopback_only`) and asks no STUN server
(`RTCConfiguration(iceServers=[])`, in `AiortcPeer`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from kit.loop import Mux
from kit.media import FRAME, MediaRecorder, Sender, dominant_frequency, tone_payload, ulaw_decode
from kit.webrtc import AiortcPeer, loopback_only

from usocket_asyncio import (
    FAULT_CODE_RTP_DTLS_SRTP_FAILED,
    SETUP_ROLE_ACTIVE,
    SETUP_ROLE_ACTPASS,
    SETUP_ROLE_PASSIVE,
    AudioCoder,
    CreateMediaProvider,
    IInstanceLog,
    IMedia,
    LogFlags,
    MediaConfigFromSdp,
    MediaConfigToSdp,
    SdpAudioMid,
    _media,
)

__all__ = ["loopback_only"]

TONE_OUT = 1000.0  # what IMedia sends
TONE_IN = 440.0  # what aiortc sends
PACKETS = 60  # 1.2 s of audio


@pytest.fixture
def mlog() -> IInstanceLog:
    return IInstanceLog(int(LogFlags.LOG_MEDIA | LogFlags.LOG_DTLS))


def new_media(mux: Mux, log: IInstanceLog, name: str) -> tuple[IMedia, MediaRecorder]:
    user = MediaRecorder(name)
    media = CreateMediaProvider().CreateMedia(mux, user, log)
    user.in_call = True
    media.Initialize(None, None, None, 0, 0, localAddresses=["127.0.0.1"])
    user.in_call = False
    mux.run_until(lambda: user.initialized, what=f"{name}: MediaInitializeComplete")
    assert user.config is not None
    return media, user


def close_media(mux: Mux, media: IMedia, user: MediaRecorder) -> None:
    user.in_call = True
    media.Close()
    user.in_call = False
    mux.run_until(lambda: user.closed, what="MediaCloseComplete")
    assert user.violations == []


def negotiate(remote: Any, local: Any) -> None:
    """Keep the remote's codecs that this side offered too, in the remote's order: what
    an SDK app does before `Connect` (IMedia sends with the first of them)."""
    ours = {c.coder for c in local.codecList}
    remote.codecList = [c for c in remote.codecList if c.coder in ours]


def check_audio(mux: Mux, peer: AiortcPeer, media: IMedia, user: MediaRecorder) -> None:
    """Send a tone each way; check each side hears the other's frequency."""
    sender = Sender(mux, media, PACKETS, tone_payload(TONE_OUT))
    sender.start()
    mux.run_until(
        lambda: sender.done and user.sent == PACKETS and len(user.payloads) >= PACKETS,
        timeout=15,
        what="a tone each way",
    )
    mux.run_until(lambda: len(peer.frames) >= PACKETS - 10, timeout=5, what="aiortc's frames")
    got_in = np.concatenate([ulaw_decode(p) for p in user.payloads[5:]])
    assert abs(dominant_frequency(got_in) - TONE_IN) < 15, dominant_frequency(got_in)
    got_out = peer.received()
    assert got_out.size >= 40 * FRAME
    assert abs(dominant_frequency(got_out) - TONE_OUT) < 15, dominant_frequency(got_out)
    assert user.ssrcs and user.ssrcs[0][0] == "127.0.0.1"
    assert user.names().index("ssrc") < user.names().index("recv")
    assert all(d == 1 for d in user.diffs[1:]), user.diffs  # loopback: in order, no loss


def check_rtcp(mux: Mux, peer: AiortcPeer, user: MediaRecorder) -> None:
    """aiortc heard this side's sender and receiver reports; this side heard aiortc's."""

    for _ in range(25):  # aiortc's stats are a coroutine: look every 0.2 s, 5 s at most
        s = peer.stats()
        if "remote-outbound-rtp" in s and "remote-inbound-rtp" in s:
            break
        mux.run_for(0.2)
    assert "remote-outbound-rtp" in s and "remote-inbound-rtp" in s, sorted(s)
    assert 0 < s["remote-outbound-rtp"].packetsSent <= PACKETS
    assert s["remote-inbound-rtp"].packetsLost == 0
    mux.run_until(
        lambda: {st.xmit for st in user.stats} == {True, False},
        timeout=5,
        what="statistics both ways",
    )
    for st in user.stats:
        assert st.loss == 0 and st.jitter < 50


@pytest.fixture
def fast_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Statistics every 0.5 s instead of 5 s and RTCP reports every 0.25-0.75 s instead of
    2.5-7.5 s, so a short call sees them."""
    monkeypatch.setattr(_media, "STATISTICS_INTERVAL", 0.5)
    monkeypatch.setattr(_media, "RTCP_INTERVAL", 0.5)


@pytest.mark.parametrize(
    "we_are_dtls_server", [False, True], ids=["imedia-client", "imedia-server"]
)
def test_aiortc_offers_imedia_answers(
    mux: Mux, mlog: IInstanceLog, loopback_only: None, fast_stats: None, we_are_dtls_server: bool
) -> None:
    peer = AiortcPeer(mux, TONE_IN)
    media, user = new_media(mux, mlog, "answerer")
    try:
        offer = peer.offer()
        remote, setup, lite = MediaConfigFromSdp(offer)
        assert setup == SETUP_ROLE_ACTPASS and not lite
        assert remote.codecList[0].coder == AudioCoder.OPUS_WB  # aiortc's first choice
        negotiate(remote, user.config)  # the app's part: the codecs both sides have
        # the answerer picks the DTLS role: active makes it the client
        our_setup = SETUP_ROLE_PASSIVE if we_are_dtls_server else SETUP_ROLE_ACTIVE
        answer = MediaConfigToSdp(user.config, our_setup, mid=SdpAudioMid(offer) or "0")
        peer.take_answer(answer)
        user.in_call = True
        media.Connect(remote, True, SETUP_ROLE_ACTIVE if we_are_dtls_server else setup)
        user.in_call = False
        mux.run_until(lambda: user.connect_error is not False, timeout=15, what="connected")
        assert user.connect_error is None
        first: AudioCoder = remote.codecList[0].coder
        assert first == AudioCoder.G711_U
        check_audio(mux, peer, media, user)
        check_rtcp(mux, peer, user)
        assert media.counters.srtp_failed == 0
        close_media(mux, media, user)
        assert user.violations == []
    finally:
        peer.close()
        media.Close()


def test_imedia_offers_aiortc_answers(
    mux: Mux,
    mlog: IInstanceLog,
    loopback_only: None,
    fast_stats: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    peer = AiortcPeer(mux, TONE_IN)
    media, user = new_media(mux, mlog, "offerer")
    try:
        offer = MediaConfigToSdp(user.config, SETUP_ROLE_ACTPASS)
        answer = peer.answer(offer)
        remote, setup, _ = MediaConfigFromSdp(answer)
        assert setup == SETUP_ROLE_ACTIVE  # aiortc answers active: this side is the DTLS server
        user.in_call = True
        media.Connect(remote, False, setup)  # the offerer controls
        user.in_call = False
        mux.run_until(lambda: user.connect_error is not False, timeout=15, what="connected")
        assert user.connect_error is None
        # DTLS 1.2: the engine's only version, and what aiortc 1.16 negotiates with it
        assert any("handshake done: DTLSv1.2" in r.getMessage() for r in caplog.records)
        check_audio(mux, peer, media, user)
        check_rtcp(mux, peer, user)
        close_media(mux, media, user)
    finally:
        peer.close()
        media.Close()


def _aiortc_profiles() -> list[str]:
    from aiortc import rtcdtlstransport

    return [p.openssl_profile.decode() for p in rtcdtlstransport.SRTP_PROFILES]


@pytest.mark.parametrize("profile", _aiortc_profiles())
def test_each_srtp_profile_aiortc_offers(
    mux: Mux,
    mlog: IInstanceLog,
    loopback_only: None,
    monkeypatch: pytest.MonkeyPatch,
    profile: str,
) -> None:
    """aiortc offering one profile at a time: the ones the DTLS engine negotiates carry
    audio; one it does not fails the connect with FAULT_CODE_RTP_DTLS_SRTP_FAILED."""
    from aiortc import rtcdtlstransport

    from usocket_asyncio._dtls_core import SRTP_PROFILES

    only = [p for p in rtcdtlstransport.SRTP_PROFILES if p.openssl_profile.decode() == profile]
    monkeypatch.setattr(rtcdtlstransport, "SRTP_PROFILES", only)
    supported = profile in SRTP_PROFILES.decode().split(":")
    peer = AiortcPeer(mux, TONE_IN)
    media, user = new_media(mux, mlog, "answerer")
    try:
        offer = peer.offer()
        remote, setup, _ = MediaConfigFromSdp(offer)
        negotiate(remote, user.config)
        peer.take_answer(
            MediaConfigToSdp(user.config, SETUP_ROLE_ACTIVE, mid=SdpAudioMid(offer) or "0")
        )
        media.Connect(remote, True, setup)
        mux.run_until(lambda: user.connect_error is not False, timeout=15, what="connect result")
        if supported:
            assert user.connect_error is None
            assert media.GetSrtpProfile() == profile
            sender = Sender(mux, media, 20, tone_payload(TONE_OUT))
            sender.start()
            mux.run_until(
                lambda: sender.done and len(user.payloads) >= 20 and len(peer.frames) >= 10,
                timeout=10,
            )
            assert user.error_codes() == []
        else:
            assert isinstance(user.connect_error, str) and "DTLS" in user.connect_error
            assert user.error_codes() == [FAULT_CODE_RTP_DTLS_SRTP_FAILED]
            assert media.GetSrtpProfile() is None
        close_media(mux, media, user)
    finally:
        peer.close()
        media.Close()
