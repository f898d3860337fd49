"""Real peers: the openssl, GnuTLS and curl command-line tools as child processes, their
output, the PEM files they read, and the keying material they print."""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from usocket_asyncio import IInstanceLog

from .dtls import Endpoint
from .loop import Mux

EXPORT = ["-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60"]
"""openssl's options that print the DTLS-SRTP keying material."""


@contextlib.contextmanager
def peer(args: list[str], stdin: bytes = b"") -> Iterator[subprocess.Popen[bytes]]:
    """A command-line peer, killed on the way out; stdout and stderr together."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert proc.stdin is not None
        if stdin:
            proc.stdin.write(stdin)
            proc.stdin.flush()
        proc.out = out  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        if proc.stdin is not None:
            proc.stdin.close()
        out.close()


def output(proc: subprocess.Popen[bytes]) -> str:
    """What a `peer` printed so far."""
    f = proc.out  # type: ignore[attr-defined]
    f.seek(0)
    text: str = f.read().decode("latin-1")
    return text


def wait_for_output(
    mux: Mux, proc: subprocess.Popen[bytes], needle: str, timeout: float = 10
) -> None:
    """Run the loop until the peer printed `needle` (or ended: then fail)."""
    mux.run_until(lambda: needle in output(proc) or proc.poll() is not None, timeout, needle)
    assert needle in output(proc), output(proc)


def wait_for_exit(mux: Mux, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> str:
    """Run the loop until the peer ended; what it printed."""
    mux.run_until(lambda: proc.poll() is not None, timeout, what)
    return output(proc)


def keying_material(text: str) -> bytes:
    """The keying material openssl or GnuTLS printed."""
    m = re.search(r"[Kk]ey(?:ing)? material: ([0-9A-Fa-f]+)", text)
    assert m is not None, text
    return bytes.fromhex(m.group(1))


def fingerprint_of(pem_path: str) -> bytes:
    """The SHA-256 fingerprint of the first certificate in a PEM file."""
    with open(pem_path, "rb") as f:
        cert = x509.load_pem_x509_certificates(f.read())[0]
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


@contextlib.contextmanager
def ready_peer(args: list[str], ready: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server `peer`, once it printed `ready` (bounded: 10 s)."""
    with peer(args) as proc:
        deadline = time.monotonic() + 10
        while ready not in output(proc) and time.monotonic() < deadline:
            assert proc.poll() is None, output(proc)
            time.sleep(0.02)
        yield proc


def client_against(mux: Mux, log: IInstanceLog, port: int, fp: bytes) -> Endpoint:
    """An `Endpoint` client whose handshake with the server at `port` completed."""
    cli = Endpoint(mux, log, False, fingerprint=fp, peer_port=port)
    mux.run_until(lambda: cli.port != 0)
    cli.connect()
    mux.run_until(lambda: cli.connected or cli.closed is not None, 15, "the handshake")
    assert cli.connected, cli.closed
    return cli
