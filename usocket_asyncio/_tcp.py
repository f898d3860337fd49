"""TCP sockets: the stream engine over `create_connection` and a listening socket."""

from __future__ import annotations

from typing import Any

from ._api import Buffer
from ._stream import StreamSocket, own_hot_path
from ._types import LogFlags


class TCPSocket(StreamSocket):
    """A TCP socket; all behaviour is the stream engine's."""

    __slots__ = ()
    LOG_FLAG = LogFlags.LOG_TCP
    KIND = "tcp"

    # The per-request methods, the engine's under this class's own name (`own_hot_path`).

    def get_buffer(self, sizehint: int) -> Any:
        return StreamSocket.get_buffer(self, sizehint)

    def buffer_updated(self, nbytes: Any) -> None:
        StreamSocket.buffer_updated(self, nbytes)

    def Send(self, buf: Buffer, len: int | None = None) -> None:
        StreamSocket.Send(self, buf, len)

    def Recv(
        self, buf: bytearray | memoryview, len: int | None = None, recvPartial: bool = False
    ) -> None:
        StreamSocket.Recv(self, buf, len, recvPartial)


own_hot_path(TCPSocket)
