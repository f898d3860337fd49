"""The ported SDK examples: the echo server driven by plain stdlib clients, the echo
client against it, and the demo as a user runs it."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kit.loop import Mux
from kit.webrtc import loopback_only

from examples.echo_client import EchoClient
from examples.echo_server import EchoServer
from usocket_asyncio import IInstanceLog, ShutdownReason, _media
from usocket_asyncio._base import LIVE

__all__ = ["loopback_only"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_thread(mux: Mux, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run blocking `fn` in a thread while the loop runs; return its result."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    mux.run_until(lambda: not t.is_alive(), timeout=timeout, what="the stdlib client")
    t.join(1.0)
    if "error" in out:
        raise out["error"]
    return out["value"]


def read_lines(s: socket.socket, n: int) -> list[bytes]:
    """Read `n` newline-terminated lines (bounded by the socket's timeout)."""
    data = b""
    while data.count(b"\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:n]


def start_server(mux: Mux, log: IInstanceLog, **kw: Any) -> EchoServer:
    ports: list[int] = []
    kw.setdefault("bind", "127.0.0.1")  # the tests stay on loopback
    server = EchoServer(mux, log, 0, deny=["127.0.0.2"], on_ready=ports.append, **kw)
    mux.run_until(lambda: bool(ports) or server.reason is not None, what="listening")
    assert ports and server.port == ports[0], server.reason
    return server


def test_server_greets_and_echoes_a_stdlib_client(mux: Mux, log: IInstanceLog) -> None:
    server = start_server(mux, log)
    lines = [f"line {i} ".encode() * (i + 1) for i in range(50)] + [b"x" * 20000]

    def peer() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            greeting = read_lines(s, 1)
            s.sendall(b"".join(line + b"\n" for line in lines))
            echoed = read_lines(s, len(lines))
            s.shutdown(socket.SHUT_WR)
            rest = s.recv(10)
            return greeting + echoed + [rest]

    got = in_thread(mux, peer)
    assert got[0] == b"hello 127.0.0.1"
    assert (
        hashlib.sha256(b"\n".join(got[1:-1])).digest() == hashlib.sha256(b"\n".join(lines)).digest()
    )
    assert got[-1] == b""  # the server closes after the client did
    mux.run_until(lambda: not server.connections, what="the connection deleting itself")
    assert server.denied == 0
    server.Close()
    mux.run_until(lambda: server.reason is not None)
    assert server.reason is ShutdownReason.SOCKET_SHUTDOWN_NORMAL


def test_server_denies_the_configured_address(mux: Mux, log: IInstanceLog) -> None:
    server = start_server(mux, log)

    def denied_peer() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", server.port))
            try:
                return s.recv(100)
            except ConnectionResetError:
                return b""

    assert in_thread(mux, denied_peer) == b""  # closed without a greeting
    assert server.denied == 1 and not server.connections

    def accepted_peer() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            return read_lines(s, 1)[0]

    # the listener carries on after denying
    assert in_thread(mux, accepted_peer) == b"hello 127.0.0.1"
    mux.run_until(lambda: not server.connections, what="the connection deleting itself")
    server.Close()
    mux.run_until(lambda: server.reason is not None)


def test_echo_client_against_the_server(mux: Mux, log: IInstanceLog) -> None:
    server = start_server(mux, log, bind="127.0.0.1")
    done: list[EchoClient] = []
    lines = ["alpha", "beta", "gamma " * 1000]
    EchoClient(mux, log, f"127.0.0.1:{server.port}", lines, on_done=done.append)
    mux.run_until(lambda: bool(done), what="the client")
    assert done[0].ok, (done[0].reason, done[0].received[:2])
    assert done[0].received[0] == "hello 127.0.0.1"
    mux.run_until(lambda: not server.connections)
    server.Close()
    mux.run_until(lambda: server.reason is not None)
    assert not [s for s in LIVE if getattr(s, "_loop", None) is mux.loop]


def test_echo_client_reports_a_refused_connection(mux: Mux, log: IInstanceLog) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connecting is refused
        done: list[EchoClient] = []
        EchoClient(mux, log, f"127.0.0.1:{port}", ["x"], on_done=done.append)
        mux.run_until(lambda: bool(done))
    assert not done[0].ok and done[0].reason is ShutdownReason.SOCKET_CONNECT_REJECTED


@pytest.mark.parametrize("flag", [[], ["--uvloop"]], ids=["asyncio", "uvloop"])
def test_demo_runs_and_exits_0(flag: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "examples.demo", *flag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3/3 clients echoed correctly" in r.stdout


def test_server_and_client_processes() -> None:
    """`python -m examples.echo_server --port N` and `python -m examples.echo_client`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "examples.echo_server", "--port", str(port), "--bind", "127.0.0.1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(200):  # until it listens: at most 200 tries, 20 ms apart
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except ConnectionRefusedError:
                time.sleep(0.02)
        r = subprocess.run(
            [sys.executable, "-m", "examples.echo_client", f"127.0.0.1:{port}", "one", "two"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "got 'two'" in r.stderr
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=10)
    assert server.returncode == 0, out
    assert "echo: 127.0.0.1 gone (SOCKET_SHUTDOWN_BY_PEER), 2 lines" in out


@pytest.mark.parametrize("module", ["echo_server", "echo_client", "demo", "media_echo"])
def test_examples_have_help(module: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", f"examples.{module}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and "--uvloop" in r.stdout, r.stderr


def test_media_echo_echoes_an_aiortc_call(mux: Mux, loopback_only: None) -> None:
    """aiortc calls the echo test with a 440 Hz tone: the tone comes back (by its
    frequency)."""
    import numpy as np
    from kit.media import dominant_frequency
    from kit.webrtc import AiortcPeer

    from examples.media_echo import EchoCall

    log = IInstanceLog(0)
    peer = AiortcPeer(mux, 440.0)
    answers: list[str | None] = []
    ended: list[bool] = []
    try:
        offer = peer.offer()
        call = EchoCall(
            mux,
            log,
            offer,
            answers.append,
            addresses=["127.0.0.1"],
            on_end=lambda: ended.append(True),
        )
        mux.run_until(lambda: bool(answers), what="the echo's answer")
        assert answers[0] is not None and "a=setup:active" in answers[0]
        peer.take_answer(answers[0])
        mux.run_until(lambda: len(peer.frames) >= 50, timeout=15, what="the echo")
        got = np.concatenate(peer.frames[10:])
        assert abs(dominant_frequency(got, peer_rate(peer)) - 440.0) < 15
        assert call.echoed >= 40 and call.error is None
        call.hang_up()
        mux.run_until(lambda: bool(ended), what="MediaCloseComplete")
    finally:
        peer.close()


def peer_rate(peer: Any) -> int:
    (rate,) = peer.rates
    return int(rate)


def test_media_echo_returns_payloads_and_digits(mux: Mux) -> None:
    """An IMedia caller: every payload comes back byte for byte, in order, and the
    digits too."""
    from kit.media import PACKETS, Sender, make, payload_for

    from examples.media_echo import EchoCall
    from usocket_asyncio import SETUP_ROLE_ACTPASS, MediaConfigFromSdp, MediaConfigToSdp

    log = IInstanceLog(0)
    media, user = make(mux, log, "caller")
    answers: list[str | None] = []
    offer = MediaConfigToSdp(user.config, SETUP_ROLE_ACTPASS)
    call = EchoCall(mux, log, offer, answers.append, addresses=["127.0.0.1"])
    mux.run_until(lambda: bool(answers), what="the answer")
    assert answers[0] is not None
    remote, setup, _ = MediaConfigFromSdp(answers[0])
    media.Connect(remote, False, setup)
    mux.run_until(lambda: user.connect_error is not False, timeout=10, what="connected")
    assert user.connect_error is None
    sender = Sender(mux, media, PACKETS, lambda i: payload_for(b"echo", i))
    sender.start()
    media.RtpDtmf("7", 101)
    mux.run_until(
        lambda: len(user.payloads) == PACKETS and ("end", "7") in user.dtmf,
        timeout=10,
        what="the echo",
    )
    assert user.payloads == [payload_for(b"echo", i) for i in range(PACKETS)]
    assert user.dtmf == [("start", "7"), ("end", "7")] and call.digits == ["7"]
    call.hang_up()
    media.Close()
    mux.run_until(lambda: user.closed)


BAD_OFFERS = {
    "not SDP": "hello, this is no offer",
    "a broken fingerprint": (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 12:34\r\na=setup:actpass\r\n"
    ),
    "no G.711": (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n"
        "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    ),
}


@pytest.mark.parametrize("what", list(BAD_OFFERS))
def test_media_echo_refuses_a_bad_offer_at_once(mux: Mux, what: str) -> None:
    """An offer the echo cannot answer is a ValueError from `EchoCall(...)` itself, with
    the reason, before any port is opened: no answer is awaited that never comes, and
    nothing reaches the loop's exception handler."""
    from examples.media_echo import EchoCall

    answers: list[str | None] = []
    opened: list[object] = []
    real = _media.IMedia.Initialize

    def initialize(*a: Any, **k: Any) -> None:
        opened.append(a)
        real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_media.IMedia, "Initialize", initialize)
        with pytest.raises(ValueError, match="G.711" if what == "no G.711" else "."):
            EchoCall(
                mux, IInstanceLog(0), BAD_OFFERS[what], answers.append, addresses=["127.0.0.1"]
            )
    mux.run_for(0.1)
    assert opened == [] and answers == [] and mux.errors == []


def test_media_echo_process_says_why_at_once() -> None:
    """`python -m examples.media_echo < bad.sdp` exits 2 at once with the reason on stderr
    (not after --seconds, not silently)."""
    r = subprocess.run(
        [sys.executable, "-m", "examples.media_echo", "--address", "127.0.0.1", "--seconds", "30"],
        cwd=ROOT,
        input=BAD_OFFERS["a broken fingerprint"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not an offer this echo can answer" in r.stderr and "fingerprint" in r.stderr, r.stderr
    assert r.stdout == ""
