"""A call anyone can try from a browser: the page calls an `IMedia` echo and plays it back.

    python -m examples.echo_call [--uvloop] [--port 8080] [--dtls-server] [-v]

then open the address it prints (http://127.0.0.1:8080/) in Chrome, Chromium or Firefox on
the same machine and press "Call": you hear what you say back, a second later. "Tone"
sends a generated 440 Hz tone instead of the microphone. The page's address takes options:
`?autostart` calls at once, `?delay=0` plays the echo without delay, `?tone` uses the
tone, `?raw` takes the microphone without echo cancellation, noise suppression and gain
control.

The page is a plain WebRTC caller: an `RTCPeerConnection` with no ICE servers, the
microphone's track, an offer that waits for its host candidates, then one HTTP POST of the
offer's SDP to this server, whose reply is the answer. Everything on this side is an asyncio
application around the library:

- `IIoMux.FromLoop()` wraps the running loop (asyncio's, or uvloop's with `--uvloop`);
  a small HTTP server (asyncio streams, 127.0.0.1 only) serves the page and takes the
  offers.
- Each offer becomes one `EchoCall` of `examples.media_echo`: `IMedia` opens a UDP port on
  127.0.0.1, gathers its candidate, and `MediaInitializeComplete` writes the answer with
  `MediaConfigFromSdp` / `MediaConfigToSdp`; ICE, DTLS-SRTP, RTP and RTCP are the
  library's; every packet heard is sent back as it came.
- The page plays the echo through a delay (so a person hears themselves after the words,
  not on top of them) and measures it: level and loudest frequency of what comes back,
  and the packets received (`getStats`). It shows them, logs them on the console and
  POSTs them to `/report`, where they are logged (`-v`: the media log too).

The echo answers `a=setup:active` (it sends the DTLS ClientHello); `--dtls-server` makes it
answer `passive`, so that the browser sends its own ClientHello (Chromium offers DTLS 1.3
and 1.2; the echo agrees 1.2). `-v` logs the media and DTLS: the versions offered and
agreed.

The echo's candidate is 127.0.0.1. A desktop browser that was allowed the microphone
offers its host addresses (never loopback) and its checks from them reach that port on the
same machine; with the tone and no microphone permission, Chrome hides its addresses
behind mDNS names, which the echo skips, and the call depends on Chrome's checks reaching
it (the echo then learns the address from them). The offer goes out once gathering is
complete, or after 3 s with the candidates there are.

Bounds: 8 calls at once, each at most `--call-seconds` (300 s) long; requests up to 64 KiB,
read within 10 s; only requests whose Host is this server (a page elsewhere cannot post
offers to it). Ctrl-C hangs up every call and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from examples.media_echo import EchoCall
from usocket_asyncio import LOG_APP, LOG_DTLS, LOG_MEDIA, IInstanceLog, IIoMux

MAX_CALLS = 8
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0
ANSWER_TIMEOUT = 10.0

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Echo call</title>
<link rel="icon" href="data:,">
<style>
body { font-family: sans-serif; max-width: 40em; margin: 2em auto; line-height: 1.4; }
button { font-size: 1.1em; margin-right: .5em; }
#heard { font-family: monospace; }
</style>
</head>
<body>
<h1>Echo call</h1>
<p>Calls the echo of <code>python -m examples.echo_call</code>: an <code>IMedia</code>
endpoint of usocket_asyncio that sends back every packet it hears. You hear yourself
again after the delay.</p>
<p>
<button id="call">Call</button><button id="hangup" disabled>Hang up</button>
<label><input type="checkbox" id="tone"> Tone (440 Hz) instead of the microphone</label>
<label>Delay <input type="number" id="delay" value="1" min="0" max="5" step="0.5"> s</label>
</p>
<p>State: <span id="state">idle</span></p>
<p>Heard back: <span id="heard">nothing yet</span></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// what the page has heard: read by a person on the page, by a test through window.echoCall
window.echoCall = { state: "idle", reports: [], error: null };
let pc = null, callId = null, timer = null, ac = null, local = null;

function state(s) {
  window.echoCall.state = s;
  $("state").textContent = s;
}

async function gathered(pc) {
  // the offer goes with every candidate gathered, or with those there are after 3 s
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    setTimeout(resolve, 3000);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

async function source(useTone) {
  if (!useTone) {
    // ?raw: the microphone as it is, without echo cancellation, noise suppression or gain
    // control (which take a steady tone for noise); keep them for a person with speakers
    const raw = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
    return navigator.mediaDevices.getUserMedia({ audio: params.has("raw") ? raw : true });
  }
  const osc = ac.createOscillator();
  osc.frequency.value = 440;
  const gain = ac.createGain();
  gain.gain.value = 0.3;
  const out = ac.createMediaStreamDestination();
  osc.connect(gain).connect(out);
  osc.start();
  return out.stream;
}

async function measure(analyser) {
  const time = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(time);
  let sum = 0;
  for (const v of time) sum += v * v;
  const level = 10 * Math.log10(sum / time.length + 1e-12);
  const freq = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(freq);
  let peak = 1;
  for (let i = 2; i < freq.length; i++) if (freq[i] > freq[peak]) peak = i;
  const report = {
    t: Math.round(performance.now()),
    levelDb: Math.round(level * 10) / 10,
    peakHz: Math.round((peak * ac.sampleRate) / analyser.fftSize),
    packetsReceived: 0,
    packetsSent: 0,
    connection: pc ? pc.connectionState : "closed",
  };
  if (pc) {
    (await pc.getStats()).forEach((s) => {
      if (s.kind !== "audio") return;
      if (s.type === "inbound-rtp") report.packetsReceived = s.packetsReceived;
      if (s.type === "outbound-rtp") report.packetsSent = s.packetsSent;
    });
  }
  window.echoCall.reports.push(report);
  $("heard").textContent = report.levelDb + " dBFS, loudest at " + report.peakHz + " Hz, " +
    report.packetsReceived + " packets";
  console.log("echo call heard " + JSON.stringify(report));
  fetch("/report", { method: "POST", body: JSON.stringify(report) }).catch(() => {});
}

async function call() {
  $("call").disabled = true;
  try {
    state("starting");
    ac = new AudioContext();
    local = await source($("tone").checked || params.has("tone"));
    pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of local.getAudioTracks()) pc.addTrack(track, local);
    pc.addEventListener("connectionstatechange", () => state(pc ? pc.connectionState : "closed"));
    const remote = new Promise((resolve) => {
      pc.addEventListener("track", (e) => resolve(e.streams[0] || new MediaStream([e.track])));
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    state("calling");
    const answer = await fetch("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (!answer.ok) throw new Error("the echo refused the call: " + (await answer.text()));
    callId = answer.headers.get("X-Call");
    await pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });
    $("hangup").disabled = false;
    const stream = await remote;
    // Chrome feeds a remote track into Web Audio only while a media element plays it
    const sink = new Audio();
    sink.muted = true;
    sink.srcObject = stream;
    await sink.play();
    const heard = ac.createMediaStreamSource(stream);
    const analyser = ac.createAnalyser();
    analyser.fftSize = 4096;
    heard.connect(analyser);
    const delay = ac.createDelay(5);
    delay.delayTime.value = Number(params.get("delay") ?? $("delay").value);
    heard.connect(delay).connect(ac.destination);
    timer = setInterval(() => measure(analyser).catch((e) => console.warn(e)), 500);
  } catch (e) {
    window.echoCall.error = String(e);
    state("failed: " + e);
    console.warn("echo call failed", e);
    await hangup();
  }
}

async function hangup() {
  if (timer) clearInterval(timer);
  timer = null;
  if (callId) await fetch("/hangup?call=" + callId, { method: "POST" }).catch(() => {});
  callId = null;
  if (pc) pc.close();
  pc = null;
  if (local) local.getTracks().forEach((t) => t.stop());
  if (ac) await ac.close();
  ac = null;
  state("idle");
  $("call").disabled = false;
  $("hangup").disabled = true;
}

$("call").addEventListener("click", call);
$("hangup").addEventListener("click", hangup);
if (params.has("autostart")) call();
</script>
</body>
</html>
"""


class HttpError(Exception):
    """A request this server answers with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    421: "Misdirected Request",
    503: "Service Unavailable",
}


class EchoServer:
    """The page, the offers and the calls: one asyncio HTTP server on 127.0.0.1.

    Args:
        iomux: the library's mux on the running loop (`IIoMux.FromLoop()`).
        log: the calls' log.
        call_seconds: how long a call may last.
    """

    def __init__(
        self, iomux: IIoMux, log: IInstanceLog, call_seconds: float, dtls_server: bool = False
    ) -> None:
        self.iomux, self.log, self.call_seconds = iomux, log, call_seconds
        self.dtls_server = dtls_server
        self.calls: dict[str, EchoCall] = {}
        self.next_call = 0
        self.port = 0
        self.echoed = 0
        self.all_ended = asyncio.Event()
        self.all_ended.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one response, then the connection is closed."""
        extra: dict[str, str] = {}
        try:
            method, target, headers, body = await asyncio.wait_for(
                self.read_request(reader), REQUEST_TIMEOUT
            )
            status, ctype, payload, extra = await self.route(method, target, headers, body)
        except HttpError as e:
            status, ctype, payload = e.status, "text/plain; charset=utf-8", str(e).encode()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        head = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", "Connection: close"]
        head += ["Cache-Control: no-store", f"Content-Length: {len(payload)}"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def read_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, dict[str, str], bytes]:
        """The request line, the headers (lower-case names) and the body."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(413, "the request's head is too long") from None
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, "not an HTTP request")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or "0")
        if not 0 <= length <= MAX_REQUEST:
            raise HttpError(413, f"a request body holds at most {MAX_REQUEST} bytes")
        body = await reader.readexactly(length)
        return parts[0], parts[1], headers, body

    async def route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, payload, extra headers) for one request."""
        if headers.get("host") not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            raise HttpError(421, "this server answers requests for itself only")
        path, _, query = target.partition("?")
        if method == "GET" and path == "/":
            return 200, "text/html; charset=utf-8", PAGE.encode(), {}
        if method == "POST" and path == "/offer":
            sdp = await self.answer(body.decode("utf-8", "replace"))
            return 200, "application/sdp", sdp[1].encode(), {"X-Call": sdp[0]}
        if method == "POST" and path == "/hangup":
            call = self.calls.get(query.removeprefix("call="))
            if call is not None:
                call.hang_up()
            return 204, "", b"", {}
        if method == "POST" and path == "/report":
            self.log.Log(LOG_APP, "echo call: the page heard %s", body[:512].decode("latin-1"))
            return 204, "", b"", {}
        raise HttpError(404, f"nothing at {method} {path}")

    async def answer(self, offer: str) -> tuple[str, str]:
        """Start an echo call for `offer`; (its id, the answer's SDP)."""
        if len(self.calls) >= MAX_CALLS:
            raise HttpError(503, f"{MAX_CALLS} calls already: hang one up first")
        answered: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        ident = str(self.next_call + 1)

        def on_answer(sdp: str | None) -> None:
            if not answered.done():
                answered.set_result(sdp)

        try:  # the offer is read before a port is spent on it
            call = EchoCall(
                self.iomux,
                self.log,
                offer,
                on_answer,
                self.call_seconds,
                ["127.0.0.1"],
                on_end=self.ended(ident),
                dtls_server=self.dtls_server,
            )
        except ValueError as e:
            raise HttpError(400, f"not an offer this echo can answer: {e}") from None
        self.next_call += 1
        self.all_ended.clear()
        self.calls[ident] = call
        try:
            sdp = await asyncio.wait_for(answered, ANSWER_TIMEOUT)
        except TimeoutError:
            call.hang_up()
            raise HttpError(503, "no answer in time: see the server's log") from None
        if sdp is None:
            raise HttpError(400, f"no answer: {call.error}")
        return ident, sdp

    def ended(self, ident: str) -> Callable[[], None]:
        """What runs when call `ident` is over: it is forgotten, its packets counted."""

        def on_end() -> None:
            call = self.calls.pop(ident)
            self.echoed += call.echoed
            self.log.Log(LOG_APP, "echo call %s: over, %d packets echoed", ident, call.echoed)
            if not self.calls:
                self.all_ended.set()

        return on_end

    def hang_up_all(self) -> None:
        """Hang up every call (their ends follow on the loop)."""
        for call in list(self.calls.values()):
            call.hang_up()


async def serve(
    port: int, call_seconds: float, log: IInstanceLog, dtls_server: bool = False
) -> int:
    """Run the server until SIGINT or SIGTERM; the number of packets echoed."""
    iomux = IIoMux.FromLoop()
    echo = EchoServer(iomux, log, call_seconds, dtls_server)
    server = await asyncio.start_server(echo.handle, "127.0.0.1", port, limit=MAX_REQUEST)
    echo.port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    kind = type(loop).__module__.split(".")[0]  # asyncio or uvloop
    print(f"echo call ({kind}): open http://127.0.0.1:{echo.port}/ and press Call", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        server.close()
        echo.hang_up_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(echo.all_ended.wait(), 5)
        await server.wait_closed()
        iomux.Close()
    print(f"echo call: {echo.next_call} calls, {echo.echoed} packets echoed", flush=True)
    return echo.echoed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.echo_call", description=__doc__)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("--port", type=int, default=8080, help="the page's port (0: any free one)")
    p.add_argument("--call-seconds", type=float, default=300.0, help="longest call (default 300)")
    p.add_argument(
        "--dtls-server",
        action="store_true",
        help="answer a=setup:passive: the browser is the DTLS client (default: this side)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also log the media and DTLS")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    log = IInstanceLog(LOG_APP | (LOG_MEDIA | LOG_DTLS if args.verbose else 0))
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port, args.call_seconds, log, args.dtls_server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
