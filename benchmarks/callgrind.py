"""Instructions per request: the echo servers under ``valgrind --tool=callgrind``.

``python -m benchmarks.callgrind [--kind tcp,local,udp,tls] [--loop uvloop]
[--impls protocol,usocket-plain] [--size 1024,65536]``

Each server (benchmarks/servers.py, with ``--mark``) runs under callgrind, which dumps
its counters each time the server marks the start or end of a window. It starts with the
instrumentation off (four times faster) and ``callgrind_control -i on`` turns it on once
the server is up (where that cannot reach the process, it is instrumented from the
start). This process, not instrumented, is the client: it sends ``--size`` byte
messages (1 KiB) on loopback (TCP, local, TLS: a stream; UDP: one datagram each) and
waits for each echo, first `WARMUP` unrecorded ones, then an empty window
(no requests), then a window of ``--requests`` requests. The figure is (instructions of
the full window - those of the empty one) / requests: the server's own user-space
instructions per request, without its start-up and the control lines. Callgrind counts
instructions, not seconds, so a busy machine gives the same figure; use it to compare
two versions of a hot path. It counts user space only: the kernel's share of each
request (the system calls' work) is not in it.

UDP cells run the servers' UDP echo (the library's is one app, whatever the style: a
flow-style server is skipped there); TLS cells the TLS echo with a throwaway
certificate, each style its own app as on TCP.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .servers import comma_list, lib_build, lib_style

KINDS = ("tcp", "local", "udp", "tls")
LOOPS = ("asyncio", "uvloop")
DEFAULT_IMPLS = ("protocol", "usocket-plain", "usocket-flow")
REFERENCE = "protocol"
WARMUP = 200
USER_SPACE_NOTE = (
    "user-space instructions only (callgrind does not see the kernel's work in the system calls)"
)


def valgrind_argv(out: Path, late: bool = True) -> list[str]:
    """The command line that runs a server under callgrind, its dumps to `out` (one more
    at each `getppid()`, the window marks); `late`: the instrumentation starts off
    (turned on once the server is up)."""
    return [
        "valgrind",
        "--tool=callgrind",
        "-q",
        f"--instr-atstart={'no' if late else 'yes'}",
        "--dump-before=getppid",
        f"--callgrind-out-file={out}",
    ]


def available() -> bool:
    """Is valgrind on the PATH?"""
    return shutil.which("valgrind") is not None


def dump_total(path: Path) -> int:
    """The instruction count ("summary:"/"totals:" line) of one callgrind dump file."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"{path}: no totals line")


def runs_on(impl: str, kind: str) -> bool:
    """Does server `impl` have a cell on `kind`? (UDP's echo is one app: the plain style
    and raw `DatagramProtocol`.)"""
    if kind != "udp":
        return True
    return impl == REFERENCE or (lib_build(impl) is not None and lib_style(impl) == "plain")


def _connect(kind: str, addr: Any) -> socket.socket:
    s: socket.socket
    if kind == "local":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(addr)
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((addr[0], addr[1]))
    else:
        s = socket.create_connection((addr[0], addr[1]))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kind == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.settimeout(120)
            s = ctx.wrap_socket(s, server_hostname="bench")
    s.settimeout(120 if kind != "udp" else 1.0)
    return s


def _drive(socks: list[socket.socket], msg: bytes, requests: int, kind: str = "tcp") -> None:
    """`requests` echoes of `msg`, spread over the connections (one message in flight on
    each at a time). UDP: one datagram each, sent again when its echo is late (a
    loopback datagram is rarely lost; a resend costs the server one request more)."""
    done = 0
    while done < requests:
        batch = socks[: requests - done]
        for s in batch:
            s.sendall(msg)
        for s in batch:
            if kind == "udp":
                for _ in range(60):
                    try:
                        if s.recv(len(msg) + 1) == msg:
                            break
                    except TimeoutError:
                        s.send(msg)
                else:
                    raise ConnectionError("no UDP echo for a minute")
                continue
            got = 0
            while got < len(msg):
                chunk = s.recv(len(msg) - got)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                got += len(chunk)
        done += len(batch)


def _instrument(pid: int) -> bool:
    """Turn callgrind's instrumentation on in process `pid`; False where it cannot."""
    try:
        proc = subprocess.run(
            ["callgrind_control", "-i", "on", str(pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "OK" in proc.stdout


def measure(
    kind: str,
    loop: str,
    impl: str,
    requests: int,
    conns: int = 1,
    size: int = 1024,
    compiled_dir: Path | None = None,
    late: bool = True,
) -> dict[str, Any]:
    """Run one server under callgrind and drive it; returns its figures
    ({"kind", "loop", "impl", "requests", "conns", "size", "ir_per_request", ...}).
    `late`: start uninstrumented and turn the instrumentation on when the server is up."""
    from .proc import ROOT, Child, ChildError, make_cert

    if not available():
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="ub-cg-") as tmp:
        out = Path(tmp) / "cg.out"
        argv = [
            *valgrind_argv(out, late),
            sys.executable,
            "-m",
            "benchmarks.servers",
            *("--kind", kind, "--impl", impl, "--loop", loop, "--dir", tmp, "--mark"),
        ]
        if kind == "tls":
            argv += ["--cert", make_cert(tmp)]
        cwd = ROOT
        floorc = impl.startswith("floorc-")  # the floor built beside the compiled library
        if lib_build(impl) == "compiled" or floorc:
            if compiled_dir is None:
                from .compiled import build

                compiled_dir = build()
            if floorc:
                from .compiled import build_floor

                build_floor(compiled_dir)
            cwd = compiled_dir
        t0 = time.monotonic()
        server = Child(argv, f"callgrind {kind}/{impl}/{loop}", cwd)
        try:
            addrs = json.loads(server.expect("READY", 600))
            if late and not _instrument(server.proc.pid):
                server.close()
                return measure(kind, loop, impl, requests, conns, size, compiled_dir, False)
            socks = [_connect(kind, addrs["echo"]) for _ in range(conns)]
            msg = os.urandom(size)
            _drive(socks, msg, WARMUP, kind)
            for n in (0, requests):  # the empty window, then the measured one
                server.send("START")
                server.expect("OK", 120)
                _drive(socks, msg, n, kind)
                server.send("STOP")
                server.recv(120)
            for s in socks:
                s.close()
        except (ChildError, OSError) as e:
            raise RuntimeError(f"{kind} {loop} {impl}: {e}") from e
        finally:
            server.close()
        empty, full = dump_total(Path(f"{out}.2")), dump_total(Path(f"{out}.4"))
    return {
        "kind": kind,
        "loop": loop,
        "impl": impl,
        "requests": requests,
        "conns": conns,
        "size": size,
        "ir_window": full,
        "ir_empty": empty,
        "ir_per_request": (full - empty) / requests,
        "seconds": time.monotonic() - t0,
    }


def table(results: list[dict[str, Any]]) -> str:
    """The figures as aligned text lines, with the ratio to raw `Protocol` on each loop."""
    ref = {
        (r["kind"], r["loop"], r.get("size", 1024)): r["ir_per_request"]
        for r in results
        if r["impl"] == REFERENCE
    }
    lines = [
        f"{'kind':<6} {'size':>6} {'loop':<8} {'server':<20} {'Ir/request':>11} {'x protocol':>10}"
    ]
    for r in results:
        size = r.get("size", 1024)
        base = ref.get((r["kind"], r["loop"], size))
        x = f"{r['ir_per_request'] / base:.2f}" if base else "-"
        lines.append(
            f"{r['kind']:<6} {size:>6} {r['loop']:<8} {r['impl']:<20} "
            f"{r['ir_per_request']:>11,.0f} {x:>10}"
        )
    return "\n".join(lines)


def run(
    kinds: list[str],
    loops: list[str],
    impls: list[str],
    requests: int,
    conns: int = 1,
    compiled_dir: Path | None = None,
    say: Any = print,
    sizes: tuple[int, ...] = (1024,),
) -> list[dict[str, Any]]:
    """Every (kind, size, loop, impl) cell in turn (UDP: the servers it has, 1 KiB
    datagrams whatever `sizes` says); `say` gets a line per cell."""
    if compiled_dir is None and any(lib_build(i) == "compiled" for i in impls):
        from .compiled import build

        compiled_dir = build()
    results = []
    for kind in kinds:
        for size in (1024,) if kind == "udp" else sizes:
            for loop in loops:
                for impl in impls:
                    if not runs_on(impl, kind):
                        continue
                    r = measure(kind, loop, impl, requests, conns, size, compiled_dir)
                    say(
                        f"callgrind {kind} {size} {loop} {impl}: "
                        f"{r['ir_per_request']:,.0f} Ir/request ({r['seconds']:.0f} s)"
                    )
                    results.append(r)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .servers import FLOOR_IMPLS, LIB_IMPLS

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.callgrind", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--kind", "--kinds", dest="kinds", default="tcp", help="tcp,local,udp,tls")
    p.add_argument("--loop", "--loops", dest="loops", default=",".join(LOOPS))
    p.add_argument(
        "--impls",
        default=",".join(DEFAULT_IMPLS),
        help="comma-separated, of: protocol, buffered, " + ", ".join((*LIB_IMPLS, *FLOOR_IMPLS)),
    )
    p.add_argument("--requests", type=int, default=2000, help="requests in the measured window")
    p.add_argument("--conns", type=int, default=1, help="connections (1: strictly serial)")
    p.add_argument(
        "--size",
        "--sizes",
        dest="sizes",
        default="1024",
        help="bytes per message, comma-separated (e.g. 1024,65536; UDP: 1024 only)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    args.kinds = comma_list(p, args.kinds, KINDS, "kind")
    args.loops = comma_list(p, args.loops, LOOPS, "loop")
    args.impls = [i for i in args.impls.split(",") if i]
    for i in args.impls:
        if i not in ("protocol", "buffered", *LIB_IMPLS, *FLOOR_IMPLS):
            p.error(f"unknown server {i!r}")
    if args.requests < 1 or args.conns < 1:
        p.error("--requests and --conns must be at least 1")
    try:
        args.sizes = tuple(int(x) for x in args.sizes.split(",") if x)
    except ValueError:
        p.error(f"--size {args.sizes!r}: give whole numbers of bytes, comma-separated")
    if not args.sizes or min(args.sizes) < 1:
        p.error("--size must be at least 1 byte")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not available():
        print("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return 1
    results = run(args.kinds, args.loops, args.impls, args.requests, args.conns, sizes=args.sizes)
    print(table(results))
    print(f"{args.requests} requests on {args.conns} connection(s); " + USER_SPACE_NOTE)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
