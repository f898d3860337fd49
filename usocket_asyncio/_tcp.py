"""TCP sockets: the stream engine over `create_connection` and a listening socket."""

from __future__ import annotations

from ._stream import StreamSocket
from ._types import LogFlags


class TCPSocket(StreamSocket):
    """A TCP socket; all behaviour is the stream engine's."""

    __slots__ = ()
    LOG_FLAG = LogFlags.LOG_TCP
    KIND = "tcp"
