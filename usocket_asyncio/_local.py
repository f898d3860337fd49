"""Local (Unix domain stream) sockets: the stream engine over a filesystem path.

`Bind(path)` makes the socket file read/write for every user (the SDK's rule, so other
processes can connect; restrict access with the permissions of the directory). A stale
socket file left by a dead process is replaced; anything else at the path is left alone
and the bind fails. The listening socket removes its own file when it closes.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING, Any

from ._address import AddressError
from ._api import Buffer, USocket
from ._stream import StreamSocket, own_hot_path, remove_stale_unix_socket
from ._types import LogFlags

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

# sun_path is 108 bytes on Linux, 104 on the BSDs, including the terminating NUL.
MAX_PATH_BYTES = 107 if os.uname().sysname == "Linux" else 103


def check_path(path: object) -> str:
    """A local socket path, or `AddressError` saying what is wrong with it."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise AddressError(f"{path!r}: a local socket address is a non-empty filesystem path")
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if "\0" in text:
        raise AddressError(f"{text!r}: a path must not contain NUL bytes")
    try:
        size = len(os.fsencode(text))
    except UnicodeEncodeError:
        raise AddressError(f"{text!r}: the file system encoding cannot encode this path") from None
    if size > MAX_PATH_BYTES:
        raise AddressError(
            f"{text!r}: {size} bytes is over the kernel's limit of "
            f"{MAX_PATH_BYTES} for a socket path; use a shorter path"
        )
    return text


class LocalSocket(StreamSocket):
    """A Unix domain stream socket."""

    __slots__ = ("_inode", "_path")
    LOG_FLAG = LogFlags.LOG_LDS
    KIND = "local"

    def __init__(
        self, iomux: IIoMux, user: USocket | None, log: IInstanceLog, useIPv6: bool = False
    ) -> None:
        super().__init__(iomux, user, log, False)  # `useIPv6` is ignored: a path has no family
        self._path = ""
        self._inode: tuple[int, int] | None = None

    def _parse_connect(self, address: str) -> Any:
        return check_path(address)

    async def _open(self, target: Any) -> None:
        await self._loop.create_unix_connection(self._as_protocol, target)

    def _remember_local(self, tr: Any) -> None:
        name = tr.get_extra_info("sockname")
        self._local = (name if isinstance(name, str) else "", 0)

    async def _bind_target(self, localAddr: str | None, localPort: int) -> tuple[int, Any]:
        return socket.AF_UNIX, check_path(localAddr)

    def _bind_socket(self, sock: socket.socket, sockaddr: Any) -> None:
        try:
            remove_stale_unix_socket(sockaddr)
        except FileExistsError as e:
            raise OSError(
                errno.EEXIST, f"{sockaddr}: exists and is not a socket; not removed"
            ) from e
        sock.bind(sockaddr)
        os.chmod(sockaddr, 0o666)
        st = os.stat(sockaddr)
        self._path = sockaddr
        self._inode = (st.st_dev, st.st_ino)

    def _bound_name(self, sock: socket.socket) -> tuple[str, int]:
        return self._path, 0

    def _remote_of(self, addr: Any) -> tuple[str, int]:
        return "", 0

    def _listener_closed(self, lsock: socket.socket) -> None:
        if self._inode is None:
            return
        try:
            st = os.stat(self._path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self._path)
        except OSError:
            pass
        self._inode = None

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


own_hot_path(LocalSocket)
