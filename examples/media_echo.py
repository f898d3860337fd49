"""An echo test, as an SDK media app writes it: what it hears, it sends back.

    python -m examples.media_echo [--uvloop] [--seconds 30] [--address 127.0.0.1] < offer.sdp

The app takes a WebRTC offer (SDP, from a browser or aiortc; here from stdin), answers it
and prints the answer on stdout, then echoes the call's audio for `--seconds`. All the
media work is the library's `IMedia`: the UDP port, ICE, DTLS-SRTP, RTP and RTCP. The app
does what an SDK app does around it:

1. Signalling is the app's: it reads the offer with `MediaConfigFromSdp` first (an offer
   it cannot answer, malformed or without G.711, is a `ValueError` at once, before a port
   is spent on it) and keeps the codecs it can echo (G.711, telephone-event) in the
   offer's order.
2. `CreateMediaProvider().CreateMedia(iomux, user, log)`, then `Initialize(...)` with the
   port range and the host addresses; `MediaInitializeComplete` gives this side's
   `MediaConfig`, from which it writes its answer with
   `MediaConfigToSdp` (`a=setup:active`: this side is the DTLS client) and calls
   `Connect(remote, iceRemoteRole=True, remoteDtlsRole)` (the offerer controls ICE).
3. `MediaConnectResult(media, None)`: it posts a `Recv`; each `MediaRtpRecvResult` goes
   straight back with `RtpSend` (same payload, same timestamp) and the buffer is posted
   again. Digits the caller presses (`MediaRtpDtmfNear`) are sent back as digits too.
4. At the end (or on an error) `Close()`; `MediaCloseComplete` ends the loop.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from usocket_asyncio import (
    CHANNEL_MEDIA_ERROR,
    DEFAULT_PAYLOAD_TYPE_DTMF,
    LOG_APP,
    LOG_MEDIA,
    SETUP_ROLE_ACTIVE,
    SETUP_ROLE_PASSIVE,
    AudioCoder,
    CreateMediaProvider,
    IInstanceLog,
    IIoMux,
    IMedia,
    ITimer,
    MediaConfig,
    MediaConfigFromSdp,
    MediaConfigToSdp,
    SdpAudioMid,
    UMedia,
    UTimer,
)

ECHOED = (AudioCoder.G711_U, AudioCoder.G711_A, AudioCoder.DTMF)
"""What the echo can send back unchanged: payloads it never decodes."""


class EchoCall(UMedia, UTimer):
    """One echo call: answers an offer, then sends back what it hears.

    Args:
        iomux: the loop.
        log: the app's log.
        offer: the caller's SDP offer.
        on_answer: gets the answer's SDP (None when the port could not be opened).
        seconds: how long the call lasts (0: until `hang_up`).
        addresses: the host candidates' addresses (None: every interface).
        on_end: called once the call is over.
        dtls_server: answer `a=setup:passive` (this side is the DTLS server and the caller
            sends the ClientHello) instead of `active`.

    Raises:
        ValueError: an offer this echo cannot answer (malformed SDP, no G.711 codec),
            with the reason; nothing was opened then.
    """

    def __init__(
        self,
        iomux: IIoMux,
        log: IInstanceLog,
        offer: str,
        on_answer: Callable[[str | None], None],
        seconds: float = 0,
        addresses: list[str] | None = None,
        on_end: Callable[[], None] | None = None,
        dtls_server: bool = False,
    ) -> None:
        remote, setup, _lite = MediaConfigFromSdp(offer, log=log)  # ValueError: not an offer
        remote.codecList = [c for c in remote.codecList if c.coder in ECHOED]
        if not [c for c in remote.codecList if c.coder != AudioCoder.DTMF]:
            raise ValueError("the offer has no G.711 codec to echo (PCMU or PCMA)")
        self.log = log
        self.offer = offer
        self.on_answer = on_answer
        self.on_end = on_end
        self.echoed = 0
        self.digits: list[str] = []
        self.error: str | None = None
        self.ended = False
        self.remote: MediaConfig = remote
        self.remote_setup: Any = setup
        self.timer = ITimer(iomux, self)
        self.seconds = seconds
        self.dtmf_pt = DEFAULT_PAYLOAD_TYPE_DTMF
        self.dtls_server = dtls_server
        self.media: IMedia = CreateMediaProvider().CreateMedia(iomux, self, log)
        self.media.Initialize(None, None, None, 0, 0, localAddresses=addresses)

    # -- the offer and the answer -----------------------------------------------------------

    def MediaInitializeComplete(self, media: IMedia, localMediaConfig: Any) -> None:
        if localMediaConfig is None:
            self.error = "no port for the media"
            self.on_answer(None)
            self.hang_up()
            return
        remote, setup = self.remote, self.remote_setup
        for c in remote.codecList:
            if c.coder == AudioCoder.DTMF:
                self.dtmf_pt = c.pt
        # answer with the codecs both sides have, in the caller's order
        local: MediaConfig = localMediaConfig
        ours = {c.coder: c for c in local.codecList}
        local.codecList = [ours[c.coder] for c in remote.codecList if c.coder in ours]
        for c in local.codecList:
            c.pt = next(r.pt for r in remote.codecList if r.coder == c.coder)
        ours_setup = SETUP_ROLE_PASSIVE if self.dtls_server else SETUP_ROLE_ACTIVE
        answer = MediaConfigToSdp(local, ours_setup, mid=SdpAudioMid(self.offer) or "0")
        self.log.Log(LOG_APP, "echo: answering with %d codecs", len(local.codecList))
        # the offerer controls ICE; we are the DTLS client (or server, told the caller is
        # active: the answer said passive)
        media.Connect(remote, True, SETUP_ROLE_ACTIVE if self.dtls_server else setup)
        self.on_answer(answer)

    def MediaConnectResult(self, media: IMedia, error: str | None) -> None:
        if error is not None:
            self.error = error
            self.log.Log(LOG_APP, "echo: the call failed: %s", error)
            self.hang_up()
            return
        self.log.Log(LOG_APP, "echo: connected, echoing")
        media.Recv(bytearray(1500))
        if self.seconds:
            self.timer.Start(int(self.seconds * 1000))

    # -- the echo ---------------------------------------------------------------------------

    def MediaRtpRecvResult(
        self,
        media: IMedia,
        buf: Any,
        len: int,
        timestamp: int,
        sequenceNumberDiff: int,
        marker: bool,
    ) -> None:
        if self.ended:
            return
        media.RtpSend(buf, len, timestamp)  # the library copied it: the buffer is free again
        self.echoed += 1
        media.Recv(buf)

    def MediaRtpDtmfNear(self, digit: str) -> None:
        self.digits.append(digit)
        if not self.ended:
            self.media.RtpDtmf(digit, self.dtmf_pt)

    def MediaEventReceived(self, media: IMedia, event: Any, ctx: Any) -> None:
        if event == CHANNEL_MEDIA_ERROR:
            self.log.Log(LOG_APP, "echo: %s (%s)", ctx.errorText, ctx.src)

    # -- the end ----------------------------------------------------------------------------

    def TimerOnTimeout(self, timer: ITimer) -> None:
        self.hang_up()

    def hang_up(self) -> None:
        """End the call: `MediaCloseComplete` follows."""
        if self.ended:
            return
        self.ended = True
        self.timer.Cancel()
        self.media.Close()

    def MediaCloseComplete(self, media: IMedia) -> None:
        self.log.Log(LOG_APP, "echo: call over, %d packets echoed", self.echoed)
        if self.on_end is not None:
            self.on_end()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.media_echo", description=__doc__)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("--seconds", type=float, default=30.0, help="call length (default 30)")
    p.add_argument(
        "--address", action="append", help="a host candidate address (default: every interface)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also log the media")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    log = IInstanceLog(LOG_APP | (LOG_MEDIA if args.verbose else 0))
    offer = sys.stdin.read()
    iomux = IIoMux.Create(uvloop=args.uvloop)

    def answered(sdp: str | None) -> None:
        if sdp is not None:
            sys.stdout.write(sdp)
            sys.stdout.flush()

    try:
        call = EchoCall(
            iomux, log, offer, answered, args.seconds, args.address, on_end=iomux.Terminate
        )
    except ValueError as e:
        iomux.Close()
        print(f"media_echo: not an offer this echo can answer: {e}", file=sys.stderr)
        return 2
    try:
        iomux.Run()
    finally:
        iomux.Close()
    return 0 if call.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
