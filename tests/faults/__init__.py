"""Loopback fault injection for the tests: a relay between a client and a server.

`StreamRelay` sits between two stream sockets (TCP v4/v6, local) and can delay,
split every write into 1-byte segments, reset or half-close at a chosen byte offset,
and stall reading. `DatagramRelay` sits between UDP (or DTLS) peers and drops or
reorders chosen datagrams. Both run on the test's event loop and are shut down with
`close()`. See `relay.py`.
"""

from .relay import (
    DatagramFaults,
    DatagramRelay,
    StreamFaults,
    StreamRelay,
    drop_first,
    dtls_content_type,
)

__all__ = [
    "DatagramFaults",
    "DatagramRelay",
    "StreamFaults",
    "StreamRelay",
    "drop_first",
    "dtls_content_type",
]
