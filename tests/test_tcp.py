"""TCP sockets: every failure reason provoked for real, and the behaviour beyond the
generic checker (tests/conformance.py): options, addresses, accept decisions."""

from __future__ import annotations

import socket

from conftest import Mux
from tcp_helpers import bound_port, client, listener

from usocket_asyncio import CreateTCPSocketProvider, IInstanceLog


def test_accepted_and_connected_sockets_have_nodelay(mux: Mux, log: IInstanceLog) -> None:
    """Both ends of a library connection send small writes at once (TCP_NODELAY): an
    accepted socket has proto 0, so asyncio would not set it by itself."""
    prov = CreateTCPSocketProvider()
    lsock, lrec, accepted = listener(mux, log, prov, "127.0.0.1")
    csock, crec = client(mux, log, prov, f"127.0.0.1:{bound_port(lrec)}")
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names(), what="connection")
    for s in (accepted[0][0], csock):
        raw = s._tr.get_extra_info("socket")  # type: ignore[attr-defined]
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, s
    for s in (csock, accepted[0][0], lsock):
        s.Delete()
