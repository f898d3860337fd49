"""The SDK's interfaces as documented abstract classes.

`USocket` is what an app subclasses to receive callbacks. `ISocket`, `ISocketProvider`
and `ISocketContext` are implemented by the library; apps only call them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from ._types import IPaddr, QosTrafficType, ShutdownReason, SocketModeError

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

Buffer: TypeAlias = bytes | bytearray | memoryview


class USocket(abc.ABC):
    """The callbacks of a socket. Subclass it; `SocketShutdown` must be implemented.

    No callback runs inside the library call that caused it. After `SocketShutdown`,
    and after `ISocket.Delete()`, no callback runs at all.
    """

    def SocketConnectComplete(self, socket: ISocket) -> None:
        """`Connect` succeeded (for TLS/DTLS: the handshake too)."""

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        """`Bind` succeeded; the address and port actually bound."""

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        """A peer connects; call `socket.Accept(user)` here, or `Accept(None)` to deny."""

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        """The accepted connection is ready; `socket` is the new, connected socket."""

    @abc.abstractmethod
    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        """The socket ended; the last callback it makes. Usually: `socket.Delete()`."""

    def SocketSendResult(self, socket: ISocket) -> None:
        """One per `Send`, in order, once its bytes have left for the kernel."""

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        """A `Recv` completed: `len` bytes are at the start of the caller's `buf`."""

    def SocketRecvFromResult(
        self,
        socket: ISocket,
        buf: Any,
        len: int,
        srcAddr: IPaddr,
        srcPort: int,
    ) -> None:
        """A `Recv` on a bound UDP socket completed with a datagram from `srcAddr:srcPort`."""

    def SocketRecvCanceled(self, socket: ISocket, buf: Any) -> None:
        """A pending `Recv` was cancelled by `RecvCancel`; one call per pending buffer."""

    def SocketUpgradeToTLSComplete(self, socket: ISocket) -> None:
        """The TLS handshake of `UpgradeToTLSSocket` completed; `socket` is the TLS socket."""

    def SocketAcceptSelectedALPNProtocol(self, socket: ISocket, protocol: str) -> bool:
        """The negotiated ALPN protocol; return False to end the connection."""
        return True


class ISocket(abc.ABC):
    """A socket made by an `ISocketProvider`. See each method for its callbacks."""

    __slots__ = ()

    @abc.abstractmethod
    def Connect(self, address: str, serverName: str | None = None) -> None:
        """Connect to "ip:port", "[v6]:port" or "name:port": `SocketConnectComplete` or
        `SocketShutdown(reason)`."""

    @abc.abstractmethod
    def Bind(
        self, localAddr: str | None = None, localPort: int = 0, reuseAddr: bool = False
    ) -> None:
        """Bind (None: all interfaces): `SocketBindResult` or `SocketShutdown(reason)`."""

    @abc.abstractmethod
    def Listen(self) -> None:
        """Listen on the bound address: `SocketListenResult` per incoming peer."""

    @abc.abstractmethod
    def Accept(self, remoteUser: USocket | None) -> None:
        """Inside `SocketListenResult` only: accept with `remoteUser` (then its
        `SocketAcceptComplete`), or deny with None."""

    @abc.abstractmethod
    def Shutdown(self) -> None:
        """Flush what was sent, close, then `SocketShutdown(SOCKET_SHUTDOWN_NORMAL)`."""

    @abc.abstractmethod
    def Send(self, buf: Buffer, len: int | None = None) -> None:
        """Send the first `len` bytes of `buf` (all by default); `SocketSendResult` follows."""

    def SendTo(self, buf: Buffer, len: int | None, dstAddr: IPaddr | str, dstPort: int) -> None:
        """UDP only: one datagram to `dstAddr:dstPort`. Ignored by other kinds."""

    @abc.abstractmethod
    def Recv(
        self, buf: bytearray | memoryview, len: int | None = None, recvPartial: bool = False
    ) -> None:
        """Receive into `buf`: `SocketRecvResult` (or `SocketRecvFromResult`)."""

    @abc.abstractmethod
    def RecvCancel(self) -> None:
        """Cancel every pending `Recv`: `SocketRecvCanceled` for each."""

    @abc.abstractmethod
    def SetUser(self, user: USocket) -> None:
        """Send the callbacks to `user` from now on."""

    @abc.abstractmethod
    def GetLocalAddress(self) -> tuple[str, int]:
        """The local address and port ("" and 0 before Bind/Connect completed)."""

    @abc.abstractmethod
    def SetQoS(self, traffic: QosTrafficType) -> None:
        """Mark outgoing packets with the DSCP of `traffic`."""

    @abc.abstractmethod
    def Delete(self) -> None:
        """Release the socket: it closes, and no callback follows, not even SocketShutdown."""

    def GetSrtpProfile(self) -> str | None:
        """DTLS-SRTP: the negotiated SRTP profile, else None."""
        return None

    def GetSrtpKeys(self) -> bytes | None:
        """DTLS-SRTP: the keying material exported with the RFC 5764 label, else None."""
        return None


class ISocketContext(abc.ABC):
    """Certificates, trust and protocol options shared by TLS and DTLS sockets."""

    @abc.abstractmethod
    def SetServerCertificate(
        self, cert: bytes, certLen: int | None = None, hostName: str | None = None
    ) -> None:
        """PEM with the private key and the certificate chain; for server sockets."""

    @abc.abstractmethod
    def SetClientCertificate(
        self, cert: bytes, certLen: int | None = None, hostName: str | None = None
    ) -> None:
        """PEM with the private key and the certificate chain; for client sockets."""

    @abc.abstractmethod
    def DisableClientCertificate(self) -> None:
        """Client sockets send no certificate."""

    @abc.abstractmethod
    def GetCertificateFingerprint(self) -> bytes:
        """SHA-256 of the DER of the server certificate in use (32 bytes)."""

    @abc.abstractmethod
    def SetALPNProtocols(self, alpnList: Sequence[str]) -> None:
        """The ALPN protocols, in order of preference."""

    def SetALPNProcotols(self, alpnList: Sequence[str]) -> None:
        """The SDK's spelling of `SetALPNProtocols`."""
        self.SetALPNProtocols(alpnList)

    @abc.abstractmethod
    def EnableDTLS(self, useSrtp: bool) -> None:
        """Sockets made with this context speak DTLS over UDP (with SRTP keying)."""

    @abc.abstractmethod
    def SetTrustedCertificates(self, pem: bytes) -> None:
        """CA bundle: clients verify servers with it; servers require client certificates."""

    @abc.abstractmethod
    def DisableCertificateVerification(self) -> None:
        """Explicit opt-out of peer verification."""

    @abc.abstractmethod
    def Delete(self) -> None:
        """Release the context; sockets made with it live on."""


class ISocketProvider(abc.ABC):
    """Makes sockets of one kind."""

    @abc.abstractmethod
    def CreateSocket(
        self,
        iomux: IIoMux,
        user: USocket,
        log: IInstanceLog,
        useIPv6: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """A new socket; choose its mode with `Connect` or `Bind`."""

    def CreateSocketContext(self, log: IInstanceLog) -> ISocketContext:
        """A context for TLS/DTLS sockets (TLS provider only)."""
        raise SocketModeError(
            "CreateSocketContext: only the TLS provider makes socket contexts; call it on "
            "CreateTLSSocketProvider(...)"
        )

    def UpgradeToTLSSocket(
        self,
        fromTCPSocket: ISocket,
        iomux: IIoMux,
        user: USocket,
        log: IInstanceLog,
        initServerSide: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """TLS provider only: TLS over a connected TCP (or UDP, for DTLS) socket."""
        raise SocketModeError(
            "UpgradeToTLSSocket: only the TLS provider upgrades sockets; call it on "
            "CreateTLSSocketProvider(...)"
        )

    def Delete(self) -> None:
        """Release the provider; the sockets it made live on."""
