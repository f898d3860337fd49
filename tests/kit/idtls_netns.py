"""`IDtls` client against `gnutls-serv --udp`, run inside a private network namespace.

gnutls-serv has no option to bind one address: it listens on every interface. The
tests never listen anywhere but loopback, so `test_idtls` runs this script under
`unshare --net` (a namespace whose only interface is `lo`, brought up first), and both
gnutls-serv and the library's client live and die in there. Usage:

    python tests/kit/idtls_netns.py LOOP SERVER_PEM

It prints one JSON object on stdout: the profile the client agreed, the records it got
back, the close reason, and gnutls-serv's output; exit code 0 when the run completed.
"""

from __future__ import annotations

import json
import os
import socket
import sys

# run as a script: tests/ (the kit's parent) first on sys.path, not this directory
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from kit.loop import ALL_LOG_FLAGS, Mux, free_port  # noqa: E402
from kit.peers import client_against, fingerprint_of, output, ready_peer  # noqa: E402
from usocket_asyncio import IInstanceLog  # noqa: E402


def only_loopback() -> bool:
    """True when this process sees no interface but `lo` (the namespace is private)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def main(kind: str, server_pem: str) -> int:
    if not only_loopback():
        print(json.dumps({"error": f"not a private namespace: {socket.if_nameindex()}"}))
        return 2
    mux = Mux(kind)
    log = IInstanceLog(ALL_LOG_FLAGS)
    port = free_port(socket.AF_INET, socket.SOCK_DGRAM)
    args = ["gnutls-serv", "--udp", "-p", str(port), "--echo"]
    args += ["--x509certfile", server_pem, "--x509keyfile", server_pem]
    args += ["--srtp-profiles", "SRTP_AES128_CM_HMAC_SHA1_80"]
    result: dict[str, object] = {}
    try:
        with ready_peer(args, "listening") as proc:
            cli = client_against(mux, log, port, fingerprint_of(server_pem))
            result["profile"] = cli.keys[1] if cli.keys is not None else None
            cli.dtls.DtlsSendApplicationData(b"echo me\n")
            mux.run_until(lambda: bool(cli.received), 10, "the echo")
            result["received"] = [r.decode("latin-1") for r in cli.received]
            cli.dtls.DtlsClose()
            result["closed"] = cli.closed
            cli.close()
            mux.run_for(0.01)
            result["server_output"] = output(proc)
        result["loop_errors"] = [str(e.get("message")) for e in mux.errors]
    finally:
        mux.loop.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
