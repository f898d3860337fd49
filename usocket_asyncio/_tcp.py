"""TCP sockets: the stream engine over `create_connection` and a listening socket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._api import ISocket, ISocketContext, ISocketProvider, USocket
from ._base import check_user
from ._stream import StreamSocket
from ._types import LogFlags

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog


class TCPSocket(StreamSocket):
    """A TCP socket; all behaviour is the stream engine's."""

    __slots__ = ()
    LOG_FLAG = LogFlags.LOG_TCP
    KIND = "tcp"


class TCPSocketProvider(ISocketProvider):
    """Makes TCP sockets."""

    __slots__ = ()

    def CreateSocket(
        self,
        iomux: IIoMux,
        user: USocket,
        log: IInstanceLog,
        useIPv6: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """A new TCP socket; `useIPv6` picks IPv6 for names and for `Bind(None)`."""
        check_user(user)
        return TCPSocket(iomux, user, log, useIPv6)


def CreateTCPSocketProvider() -> ISocketProvider:
    """The provider of TCP sockets."""
    return TCPSocketProvider()
