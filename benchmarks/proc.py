"""The benchmark's child processes: servers, clients and load generators spoken to in
lines over their stdin and stdout, pinned to CPUs, and the throwaway TLS certificate they
share (used by `run`, `callgrind` and `media`, which import each other's figures only
through this module)."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The project's root: the children run from it, with it on PYTHONPATH."""


class ChildError(RuntimeError):
    """A server or client process misbehaved."""


class Child:
    """A child process spoken to in lines over its stdin and stdout."""

    def __init__(self, argv: list[str], name: str, cwd: Path = ROOT) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buf = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise ChildError(f"{self.name} exited ({self.proc.poll()})") from e

    def recv(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{self.name}: no answer within {timeout:.0f} s")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                data = os.read(self.fd, 65536)
                if not data:
                    raise ChildError(f"{self.name} exited ({self.proc.wait()})")
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def expect(self, prefix: str, timeout: float) -> str:
        line = self.recv(timeout)
        if not line.startswith(prefix):
            raise ChildError(f"{self.name}: expected {prefix!r}, got {line!r}")
        return line[len(prefix) :].strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("QUIT")
                self.proc.wait(timeout=5)
            except (ChildError, subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): two different CPUs where the OS lets us pin."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def make_cert(directory: str) -> str:
    """A certificate (with key) for the TLS servers, from a throwaway CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "bench")
    path = os.path.join(directory, "server.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(path)
    return path
