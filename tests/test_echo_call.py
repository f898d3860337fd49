"""`python -m examples.echo_call`: a browser calls an `IMedia` echo and hears itself back.

The whole example runs as a person runs it: the server as a subprocess
(`python -m examples.echo_call --port 0`, on asyncio or uvloop), its page opened in headless
Chromium (tests/kit/browser.py) whose fake microphone plays a 660 Hz tone from a WAV file.
The page calls (RTCPeerConnection, no ICE servers, offer and answer over HTTP POST), plays
the echo back and measures what it hears: the loudest frequency of the received audio
must be the tone's, loud, over packets that the server echoed. Server and browser run in a
network namespace that has only loopback; where none can be made, or Chromium is missing,
the test is skipped with the reason. The HTTP side's refusals are checked in-process.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import struct
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from kit.browser import MEDIA_FLAGS, chromium_binary, in_loopback_namespace, namespace_unavailable
from kit.loop import LOOPS

from examples.echo_call import MAX_REQUEST, EchoServer
from usocket_asyncio import IInstanceLog, IIoMux

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "kit" / "browser.py"
TONE_HZ = 660

# In the page: wait until four reports in a row heard something loud (or 20 s, or an
# error), then hand back everything the page recorded.
UNTIL_HEARD = """new Promise((resolve) => {
  const t0 = Date.now();
  const poll = () => {
    const c = window.echoCall;
    const loud = c.reports.slice(-4).filter((r) => r.levelDb > -30 && r.packetsReceived > 0);
    if (c.error || loud.length === 4 || Date.now() - t0 > 20000) resolve(c);
    else setTimeout(poll, 200);
  };
  poll();
})"""


def write_tone(path: Path, hz: int, seconds: float = 1.0, rate: int = 48000) -> None:
    """A mono 16-bit WAV of a sine at `hz` (Chromium's fake microphone loops it)."""
    frames = b"".join(
        struct.pack("<h", round(12000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "loop,dtls_server",
    [(LOOPS[0], False), (LOOPS[-1], False), (LOOPS[0], True), (LOOPS[-1], True)],
    ids=lambda v: {False: "echo-dtls-client", True: "echo-dtls-server"}.get(v, v),
)
def test_a_browser_call_hears_its_tone_back(loop: str, dtls_server: bool) -> None:
    """... in DTLS 1.2, whichever side sends the ClientHello: the echo (its answer says
    `a=setup:active`) offers DTLS 1.2 alone; Chromium (`--dtls-server`, the answer says
    passive) offers DTLS 1.3 and 1.2, and the echo's engine, DTLS 1.2 only, agrees 1.2."""
    if chromium_binary() is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    why = namespace_unavailable()
    if why is not None:
        pytest.skip(why)
    server = [sys.executable, "-m", "examples.echo_call", "--port", "0", "--call-seconds", "60"]
    server.append("-v")  # the media and DTLS log: the versions offered and agreed
    if dtls_server:
        server.append("--dtls-server")
    if loop == "uvloop":
        server.append("--uvloop")
    with tempfile.TemporaryDirectory() as tmp:
        tone = Path(tmp) / "tone.wav"
        write_tone(tone, TONE_HZ)
        flags = [*MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={tone}"]
        args = [sys.executable, str(CHILD), "served", "--query", "?autostart&raw&delay=0"]
        args += [f"--flag={f}" for f in flags] + ["--until", UNTIL_HEARD, "--", *server]
        run = subprocess.run(
            in_loopback_namespace(args),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=75,
            check=False,
        )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    log = result["server_stderr"]
    heard = result["value"]
    assert heard["error"] is None, (heard, log)
    assert result["errors"] == [], (result["errors"], log)
    reports = heard["reports"]
    assert len(reports) >= 4, (heard, log)
    for r in reports[-4:]:
        # the tone came back: loud, at its frequency (a bin is 48000 / 4096 = 11.7 Hz wide)
        assert r["levelDb"] > -30, (r, reports)
        assert abs(r["peakHz"] - TONE_HZ) <= 15, (r, reports)
        assert r["connection"] == "connected", r
    assert reports[-1]["packetsReceived"] >= 50, reports  # a second of audio at least
    # the server ran on the loop asked for, answered one call, echoed what the page heard
    assert result["server_rc"] == 0, log
    out = result["server_stdout"]
    assert f"echo call ({loop}): open http://127.0.0.1:" in out, out
    done = re.search(r"echo call: 1 calls, (\d+) packets echoed", out)
    assert done is not None, out
    assert int(done.group(1)) >= reports[-1]["packetsReceived"], (out, reports[-1])
    assert "the page heard" in log
    # DTLS 1.2 was agreed; with Chromium as the DTLS client, what its ClientHello offered
    assert re.search(r"idtls \w+: handshake done: DTLSv1\.2 ", log), log
    hello = re.search(r"idtls \w+: ClientHello from \S+ offers (.*)", log)
    if dtls_server:
        assert hello is not None, log
        # Chromium 156 offers "DTLSv1.3, DTLSv1.2" (its ClientHello, with an X25519MLKEM768
        # key share, comes in two fragments); 1.2 must be among them for the call to work
        assert "DTLSv1.2" in hello.group(1).split(", "), hello.group(1)
    else:
        assert hello is None, log  # the echo sent the ClientHello


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\na=mid:0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=candidate:1 1 udp 2122260223 127.0.0.1 9999 typ host\r\n"
)
FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
NO_FINGERPRINT = OFFER.encode()  # SAVPF without a fingerprint: no keying this echo knows
NO_G711 = (OFFER + FINGERPRINT).encode()  # a good offer, but only Opus


def run_on(loop: str, main: Callable[[], object]) -> None:
    """Run the coroutine function `main` on a fresh loop of the kind asked for."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send one raw HTTP request; the response's status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("loop", LOOPS)
def test_the_server_answers_itself_only_and_within_bounds(loop: str) -> None:
    """The page is served; another Host, an unknown path, a body over the bound and an
    offer without G.711 are refused with a status and a sentence, and no call is left."""

    async def main() -> None:
        iomux = IIoMux.FromLoop()
        echo = EchoServer(iomux, IInstanceLog(), 10)
        server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, limit=MAX_REQUEST)
        port = echo.port = server.sockets[0].getsockname()[1]
        host = f"Host: 127.0.0.1:{port}\r\n".encode()
        try:
            status, body = await request(port, b"GET / HTTP/1.1\r\n" + host + b"\r\n")
            assert status == 200 and b"<h1>Echo call</h1>" in body
            assert b"RTCPeerConnection({ iceServers: [] })" in body
            status, body = await request(port, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            assert status == 421, body
            status, body = await request(port, b"GET /nope HTTP/1.1\r\n" + host + b"\r\n")
            assert status == 404, body
            big = f"Content-Length: {MAX_REQUEST + 1}\r\n".encode()
            status, body = await request(port, b"POST /offer HTTP/1.1\r\n" + host + big + b"\r\n")
            assert status == 413 and b"at most" in body, body
            for offer, why in ((NO_FINGERPRINT, b"not an offer"), (NO_G711, b"no G.711")):
                length = f"Content-Length: {len(offer)}\r\n".encode()
                status, body = await request(
                    port, b"POST /offer HTTP/1.1\r\n" + host + length + b"\r\n" + offer
                )
                assert status == 400 and why in body, body
            await asyncio.wait_for(echo.all_ended.wait(), 5)
            assert echo.calls == {}
        finally:
            server.close()
            await server.wait_closed()
            iomux.Close()

    run_on(loop, main)
