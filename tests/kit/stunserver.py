"""A real STUN server on loopback for the tests: coturn's `turnserver` in STUN-only mode.

`coturn(workdir)` starts `turnserver` on 127.0.0.1 and a free UDP port (no TLS, DTLS,
TCP, CLI or relay use; its database, pid file and log in `workdir`), waits until it
answers a STUN Binding request, yields its (ip, port), and kills it on the way out.
`TURNSERVER` is None when the binary is missing (the tests skip, saying so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

from usocket_asyncio._stun import BINDING, REQUEST, StunError, StunMessage, encode, parse

from .loop import free_port

TURNSERVER = shutil.which("turnserver")
"""The coturn binary, or None (Debian's `coturn` package installs it)."""
READY_TIMEOUT = 10.0


def stun_binding(server: tuple[str, int], timeout: float = 0.2) -> tuple[str, int] | None:
    """One blocking Binding request from a fresh loopback socket: the XOR-MAPPED-ADDRESS
    of the answer, or None if none came within `timeout`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        tid = os.urandom(12)
        s.sendto(encode(StunMessage(BINDING, REQUEST, tid)), server)
        try:
            data, _ = s.recvfrom(2048)
            msg = parse(data)
        except (OSError, StunError):
            return None
        return msg.xor_mapped_address if msg.transaction_id == tid else None


@contextlib.contextmanager
def coturn(workdir: str) -> Iterator[tuple[str, int]]:
    """A running STUN-only coturn on 127.0.0.1 (see the module docstring)."""
    assert TURNSERVER is not None, "turnserver (Debian package coturn) is not installed"
    for _attempt in range(3):  # the free port may be taken again before coturn binds it
        port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
        log = open(os.path.join(workdir, f"turnserver-{port}.log"), "wb")  # noqa: SIM115
        args = [
            TURNSERVER,
            "-n",  # no configuration file
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--log-file=stdout",
            "--simple-log",
            f"--pidfile={os.path.join(workdir, 'turnserver.pid')}",
            f"--userdb={os.path.join(workdir, 'turndb')}",
        ]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                if stun_binding(("127.0.0.1", port)) is not None:
                    yield "127.0.0.1", port
                    return
            if proc.poll() is None:
                raise AssertionError(f"turnserver did not answer within {READY_TIMEOUT} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
            log.close()
    raise AssertionError("turnserver exited three times at start: see its logs in " + workdir)
