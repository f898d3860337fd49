"""Scan the library's TLS server with sslyze against Mozilla's "intermediate" configuration.

Usage: python tests/kit/tls_scan.py [--loop asyncio|uvloop] [--config intermediate]

Starts a TLS server with the library's defaults (a context with nothing set: the default
self-signed certificate, the default cipher suites, groups and versions) on 127.0.0.1 in
a child process, then runs `python -m sslyze --mozilla_config=CONFIG` against it. The
certificate is self-signed, so the child writes it to a file that sslyze takes as its
trust anchor (`--certinfo_ca_file`): the check then judges the configuration, not the
lack of a public CA. Exits with sslyze's status: 0 when the server complies, non-zero
(and sslyze's report on stdout) when it does not. Run by .ci/run and by
tests/test_tls_config.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile

# run as a script: the project and tests/ (the kit's parent) on sys.path, not this directory
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0:1] = [os.path.dirname(_TESTS), _TESTS]

SCAN_TIMEOUT = 300.0
"""Seconds sslyze may take (a scan of loopback takes about 10-30 s)."""


def serve(cert_file: str, loop: str) -> None:
    """The child: a library TLS server with the defaults until stdin closes; its port on
    stdout, its certificate in `cert_file`."""
    from kit.certs import Server
    from kit.loop import Mux
    from usocket_asyncio import CreateTCPSocketProvider, CreateTLSSocketProvider, IInstanceLog
    from usocket_asyncio._context import default_server_cert

    mux = Mux(loop)
    log = IInstanceLog()
    prov = CreateTLSSocketProvider(CreateTCPSocketProvider())
    srv = Server(mux, log, prov, None)  # no context: every default
    with open(cert_file, "wb") as f:
        f.write(default_server_cert().chain_pem)
    print(srv.port, flush=True)
    stdin_closed: asyncio.Future[None] = mux.loop.create_future()

    def readable() -> None:  # stdin is read only for its end: the parent closes it
        if not stdin_closed.done():
            stdin_closed.set_result(None)

    mux.loop.add_reader(sys.stdin.fileno(), readable)
    mux.loop.run_until_complete(stdin_closed)
    mux.loop.remove_reader(sys.stdin.fileno())
    for rec in srv.recs:  # the scanner's connections end as they like: no check of them
        rec.violations.clear()
    srv.close()
    mux.Close()


def scan(loop: str, config: str) -> int:
    """Start the server child, scan it; sslyze's exit status."""
    with tempfile.TemporaryDirectory(prefix="tlsscan") as tmp:
        cert_file = os.path.join(tmp, "server.pem")
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", cert_file, "--loop", loop],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().decode().strip()
            if not line.isdigit():
                print(f"tls_scan: the server did not start (it said {line!r})", file=sys.stderr)
                return 2
            target = f"127.0.0.1:{line}"
            print(f"tls_scan: sslyze --mozilla_config={config} {target} ({loop})", flush=True)
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sslyze",
                    f"--mozilla_config={config}",
                    f"--certinfo_ca_file={cert_file}",
                    target,
                ],
                timeout=SCAN_TIMEOUT,
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            report = run.stdout.decode("utf-8", "replace")
            print(report[report.find("COMPLIANCE AGAINST") :] if run.returncode == 0 else report)
            return run.returncode
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--config", choices=["intermediate", "modern", "old"], default="intermediate")
    ap.add_argument("--serve", metavar="CERT_FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.loop)
        return 0
    return scan(args.loop, args.config)


if __name__ == "__main__":
    sys.exit(main())
