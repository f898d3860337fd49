"""TCP sockets: the stream engine over `create_connection` and a listening socket."""

from __future__ import annotations

from ._api import ISocketProvider
from ._base import SocketProviderBase
from ._stream import StreamSocket
from ._types import LogFlags


class TCPSocket(StreamSocket):
    """A TCP socket; all behaviour is the stream engine's."""

    __slots__ = ()
    LOG_FLAG = LogFlags.LOG_TCP
    KIND = "tcp"


class TCPSocketProvider(SocketProviderBase):
    """Makes TCP sockets: `useIPv6` picks IPv6 for names and for `Bind(None)`;
    `socketContext` is ignored."""

    __slots__ = ()
    SOCKET = TCPSocket


def CreateTCPSocketProvider() -> ISocketProvider:
    """The provider of TCP sockets."""
    return TCPSocketProvider()
