"""DTLS-SRTP against real peers: `openssl s_server -dtls1_2` and `openssl s_client -dtls1_2`.

The keying material both sides export with the RFC 5764 label must be equal to what
the tool prints.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kit.certs import Server, connect, delete, ended_once, pem_of
from kit.conformance import call
from kit.dtls import answer_once, dtls_ctx
from kit.loop import Mux, R, free_port
from kit.peers import (
    EXPORT,
    keying_material,
    output,
    peer,
    ready_peer,
    wait_for_exit,
    wait_for_output,
)

from usocket_asyncio import (
    IInstanceLog,
    ISocketProvider,
)
from usocket_asyncio._dtls import DTLSSocket

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
    pytest.mark.timeout(30),
]


@contextmanager
def dtls_s_server(
    profile: str, files: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    args = ["openssl", "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}"]
    args += ["-cert", files["server"], "-use_srtp", profile, *EXPORT, "-naccept", "1"]
    with ready_peer(args, "ACCEPT") as proc:
        yield proc, port


def test_library_client_against_s_server(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """The library client verifies s_server's chain and name, agrees
    SRTP_AES128_CM_SHA1_80, exports the same 60 bytes, and data flows both ways."""
    with dtls_s_server("SRTP_AES128_CM_SHA1_80", files) as (proc, port):
        cctx = dtls_ctx(prov, log, trust=ca.cert_pem.bytes())
        cli, crec = connect(mux, log, prov, cctx, port, "localhost")
        mux.run_until(lambda: crec.events != [], 10, "the handshake")
        assert crec.names() == ["connect"], (crec.events, output(proc))
        d = cli
        assert isinstance(d, DTLSSocket)
        wait_for_output(mux, proc, "Keying material:")
        assert d.GetSrtpProfile() == "SRTP_AES128_CM_SHA1_80"
        assert d.GetSrtpKeys() == keying_material(output(proc))
        assert "SRTP Extension negotiated, profile=SRTP_AES128_CM_SHA1_80" in output(proc)
        call(crec, cli.Recv, bytearray(200))
        call(crec, cli.Send, b"hello from the library\n")
        wait_for_output(mux, proc, "hello from the library")
        assert proc.stdin is not None
        proc.stdin.write(b"hello from s_server\n")
        proc.stdin.flush()
        mux.run_until(lambda: "recv" in crec.names(), 10, "s_server's line")
        assert crec.received == b"hello from s_server\n"
        call(crec, cli.Shutdown)
        mux.run_until(lambda: crec.shutdown is not None)
        ended_once(crec, R.SOCKET_SHUTDOWN_NORMAL)
        wait_for_exit(mux, proc, "s_server to see close_notify", 10)
        delete(cli)


def test_library_client_without_a_common_profile(
    mux: Mux, log: IInstanceLog, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """s_server offering only SRTP_AES128_CM_SHA1_32, which the library does not
    offer: the library client's handshake fails."""
    with dtls_s_server("SRTP_AES128_CM_SHA1_32", files) as (proc, port):
        cctx = dtls_ctx(prov, log, verify=False)
        cli, crec = connect(mux, log, prov, cctx, port, None)
        mux.run_until(lambda: crec.shutdown is not None, 10, "the handshake to fail")
        ended_once(crec, R.SOCKET_TLS_HANDSHAKE_FAILED)
        assert crec.names() == ["shutdown"], (crec.events, output(proc))
        delete(cli)


def test_s_client_against_library_server(
    mux: Mux, log: IInstanceLog, ca: Any, prov: ISocketProvider, files: dict[str, str]
) -> None:
    """openssl s_client verifies the library server (return code 0), both export the
    same keying material, a line each way, then close_notify from the library."""
    sctx = dtls_ctx(prov, log, cert=pem_of(ca, "localhost", "127.0.0.1"))
    srv = Server(mux, log, prov, sctx)
    answer_once(srv, b"hello from the library\n")
    args = ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{srv.port}"]
    args += ["-CAfile", files["ca"], "-verify_hostname", "localhost", "-verify_return_error"]
    args += ["-use_srtp", "SRTP_AES128_CM_SHA1_80", *EXPORT, "-mtu", "1200", "-ign_eof"]
    with peer(args, b"hello from s_client\n") as proc:
        text = wait_for_exit(mux, proc, "s_client to finish")
    assert "Verify return code: 0 (ok)" in text, text
    assert "hello from the library" in text, text
    assert len(srv.recs) == 1
    rec = srv.recs[0]
    mux.run_until(lambda: rec.shutdown is not None)
    assert rec.names() == ["accept", "recv", "send", "shutdown"], rec.events
    ended_once(rec, R.SOCKET_SHUTDOWN_NORMAL)
    assert bytes(rec.received) == b"hello from s_client\n"
    s = srv.socks[0]
    assert isinstance(s, DTLSSocket)
    assert s.GetSrtpProfile() == "SRTP_AES128_CM_SHA1_80"
    assert s.GetSrtpKeys() == keying_material(text)
    srv.close()
