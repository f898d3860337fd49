"""The SDK's interfaces as documented abstract classes.

`USocket` is what an app subclasses to receive callbacks. `ISocket`, `ISocketProvider`
and `ISocketContext` are implemented by the library; apps only call them.
"""

from __future__ import annotations

import abc
import difflib
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from ._types import IPaddr, QosTrafficType, ShutdownReason, SocketModeError

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What `Send` and `SendTo` take: bytes, bytearray or memoryview."""


class USocketCallbackWarning(UserWarning):
    """A `USocket` subclass defines a `Socket*` method that is no callback of the interface.

    The library never calls such a method, so a misspelled callback (say
    `SocketReceiveResult` for `SocketRecvResult`) would otherwise lose its events without
    a sign. The warning comes once, when the class is created, and names the closest real
    callback. A method that is meant to be a helper can be renamed, or the warning
    filtered with `warnings.filterwarnings("ignore", category=USocketCallbackWarning)`.
    """


def _check_callback_names(cls: type, callbacks: frozenset[str]) -> None:
    """Warn about each `Socket*` method of `cls` (its own, not inherited) that is not one
    of `callbacks`, naming the closest one."""
    for name, value in vars(cls).items():
        if not name.startswith("Socket") or name in callbacks:
            continue
        if not (callable(value) or isinstance(value, (staticmethod, classmethod, property))):
            continue
        close = difflib.get_close_matches(name, sorted(callbacks), n=1, cutoff=0.5)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "the callbacks are " + ", ".join(sorted(callbacks))
        )
        message = f"{cls.__qualname__}.{name} is not a USocket callback and is never called: {hint}"
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        if code is not None:
            warnings.warn_explicit(
                message,
                USocketCallbackWarning,
                code.co_filename,
                code.co_firstlineno,
                module=cls.__module__,
            )
        else:
            warnings.warn(message, USocketCallbackWarning, stacklevel=4)


class USocket(abc.ABC):
    """The callbacks of a socket: what an app subclasses to hear from its sockets.

    Only `SocketShutdown` must be implemented; every other callback does nothing by
    default (`SocketAcceptSelectedALPNProtocol` returns True). One `USocket` may serve
    many sockets: each callback gets the socket it is about as its first argument.

    No callback runs inside the library call that caused it: each arrives later, on the
    loop. Exactly one `SocketShutdown` ends each socket, and no callback follows it; after
    `ISocket.Delete()` no callback runs at all. An exception raised by a callback goes to
    the loop's exception handler and the socket carries on.

    A subclass that defines a `Socket*` method the interface does not have gets a
    `USocketCallbackWarning` when the class is created, naming the closest callback.
    """

    __slots__ = ()  # an app class that declares its own slots gets no instance dict

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_callback_names(cls, USOCKET_CALLBACKS)

    def SocketConnectComplete(self, socket: ISocket) -> None:
        """`Connect` succeeded (for TLS and DTLS: the handshake too).

        Args:
            socket: the connected socket. `Send` and `Recv` work from here on.
        """

    def SocketBindResult(self, socket: ISocket, localAddr: str, localPort: int) -> None:
        """`Bind` succeeded; the usual place to call `socket.Listen()`.

        Args:
            socket: the bound socket.
            localAddr: the address bound: `"0.0.0.0"` (or `"::"`) for all interfaces; the
                path for a local socket.
            localPort: the port bound (the one the system chose for port 0); 0 for a local
                socket.
        """

    def SocketListenResult(self, socket: ISocket, remoteAddr: str, remotePort: int) -> None:
        """A peer connects to a listening socket: decide here.

        Call `socket.Accept(user)` to accept (then `user.SocketAcceptComplete(new)`), or
        `socket.Accept(None)` to deny. A connection not decided on here is denied.

        Args:
            socket: the listening socket.
            remoteAddr: the peer's IP literal (plain IPv4 for IPv4 peers of a dual-stack
                listener; `""` for a local socket).
            remotePort: the peer's port (0 for a local socket).
        """

    def SocketAcceptComplete(self, socket: ISocket) -> None:
        """An accepted connection is ready (for TLS and DTLS: after its handshake).

        Args:
            socket: the new, connected socket; this user owns it and `Delete`s it when done.
        """

    @abc.abstractmethod
    def SocketShutdown(self, socket: ISocket, reason: ShutdownReason) -> None:
        """The socket ended; the last callback it makes. Usually: `socket.Delete()`.

        Args:
            socket: the socket that ended.
            reason: why: `SOCKET_SHUTDOWN_NORMAL` after `Shutdown`,
                `SOCKET_SHUTDOWN_BY_PEER` when the peer closed, `SOCKET_LOST` when the
                connection broke, or the failure of `Bind`, `Listen`, `Connect` or the
                handshake. The failure's detail is logged under the socket's log flag.
        """

    def SocketSendResult(self, socket: ISocket) -> None:
        """One per `Send` (or `SendTo`), in order, once its bytes have left for the kernel.

        Args:
            socket: the socket that sent.
        """

    def SocketRecvResult(self, socket: ISocket, buf: Any, len: int) -> None:
        """A `Recv` completed.

        Args:
            socket: the socket that received.
            buf: the buffer given to `Recv`; the bytes are at its start. It is the app's
                again when this returns.
            len: how many bytes arrived: exactly the `len` asked for, unless `recvPartial`
                was set (1 to `len`), the socket is a datagram socket (one datagram), or
                the peer closed first (what there was).
        """

    def SocketRecvFromResult(
        self,
        socket: ISocket,
        buf: Any,
        len: int,
        srcAddr: IPaddr,
        srcPort: int,
    ) -> None:
        """A `Recv` on a bound UDP socket completed with one datagram (UDP only).

        Args:
            socket: the socket that received.
            buf: the buffer given to `Recv`; the datagram is at its start.
            len: the datagram's length (at most the `len` asked for; a longer datagram is
                truncated, and that is logged).
            srcAddr: the sender's address (an `ipaddress` object).
            srcPort: the sender's port.
        """

    def SocketRecvCanceled(self, socket: ISocket, buf: Any) -> None:
        """A pending `Recv` was cancelled by `RecvCancel`: one call per pending buffer, in
        order.

        Args:
            socket: the socket.
            buf: the buffer of the cancelled `Recv`.
        """

    def SocketUpgradeToTLSComplete(self, socket: ISocket) -> None:
        """The handshake begun by `UpgradeToTLSSocket` completed.

        Args:
            socket: the new TLS (or DTLS) socket `UpgradeToTLSSocket` returned.
        """

    def SocketAcceptSelectedALPNProtocol(self, socket: ISocket, protocol: str) -> bool:
        """The ALPN protocol the handshake agreed on, on both sides, before the socket's
        `SocketConnectComplete` / `SocketAcceptComplete` / `SocketUpgradeToTLSComplete`.

        Args:
            socket: the TLS or DTLS socket.
            protocol: the negotiated protocol, e.g. `"h2"`.

        Returns:
            True to go on; False ends the connection with `SOCKET_ALPN_SELECTION_FAILED`.
        """
        return True


USOCKET_CALLBACKS: frozenset[str] = frozenset(
    name for name in vars(USocket) if name.startswith("Socket")
)
"""The names of every `USocket` callback."""


class ISocket(abc.ABC):
    """A socket made by an `ISocketProvider`: TCP, TLS, UDP, local or DTLS.

    The first of `Bind` or `Connect` fixes the socket's mode (server or client); a call
    of the other mode raises `SocketModeError`. Every call returns at once; what it leads
    to arrives later as a callback of the socket's `USocket`. The library holds the
    socket until `Delete()`, so the app need keep no reference.
    """

    __slots__ = ()

    @abc.abstractmethod
    def Connect(self, address: str, serverName: str | None = None) -> None:
        """Connect to `address` (client mode).

        Leads to `SocketConnectComplete`, or to `SocketShutdown` with
        `SOCKET_ADDRESS_INVALID` (no port, bad syntax, port out of range),
        `SOCKET_CONNECT_REJECTED` (refused), `SOCKET_CONNECT_FAILED` (unreachable, timeout,
        unresolvable name), `SOCKET_OPEN_FAILED`, or for TLS/DTLS
        `SOCKET_TLS_HANDSHAKE_FAILED` / `SOCKET_ALPN_SELECTION_FAILED`.

        Args:
            address: `"a.b.c.d:port"`, `"[v6]:port"`, or `"host.name:port"` (resolved
                without blocking the loop); a filesystem path for a local socket.
            serverName: TLS/DTLS: the name to verify the server's certificate against and
                to send by SNI (else the IP literal is verified).

        Raises:
            SocketModeError: the socket is already bound or connecting, or was deleted.
        """

    @abc.abstractmethod
    def Bind(
        self, localAddr: str | None = None, localPort: int = 0, reuseAddr: bool = False
    ) -> None:
        """Bind the socket (server mode, or a UDP socket that receives from anyone).

        Leads to `SocketBindResult(socket, localAddr, localPort)`, or to `SocketShutdown`
        with `SOCKET_ADDRESS_INVALID`, `SOCKET_ADDR_IN_USE`, `SOCKET_BIND_FAILED` or
        `SOCKET_OPEN_FAILED`.

        Args:
            localAddr: an IP literal or name; None binds all interfaces (reported as
                `"0.0.0.0"`, or `"::"` with `useIPv6`). A filesystem path for a local socket.
            localPort: the port; 0 lets the system choose.
            reuseAddr: beyond the SDK: set `SO_REUSEADDR` (UDP) for a shared port.

        Raises:
            SocketModeError: the socket is already bound or connecting, or was deleted.
        """

    @abc.abstractmethod
    def Listen(self) -> None:
        """Listen on the bound address; usually called in `SocketBindResult`.

        Leads to one `SocketListenResult(socket, remoteAddr, remotePort)` per incoming
        peer, or to `SocketShutdown(SOCKET_LISTEN_FAILED)`.

        Raises:
            SocketModeError: the socket is not bound (or binding).
        """

    @abc.abstractmethod
    def Accept(self, remoteUser: USocket | None) -> None:
        """Decide on the peer of the current `SocketListenResult` (only inside it).

        Args:
            remoteUser: the user of the new socket, whose `SocketAcceptComplete(new)`
                follows; None denies the peer (the connection is closed, no byte sent).

        Raises:
            SocketModeError: called outside `SocketListenResult`, or twice in it.
        """

    @abc.abstractmethod
    def Shutdown(self) -> None:
        """Close in order: send everything cached, close, then
        `SocketShutdown(SOCKET_SHUTDOWN_NORMAL)`.

        `Send` and `Recv` after it are ignored. A TLS socket sends `close_notify` and waits
        a bounded time for the peer's. A peer that stops reading for a bounded time is
        given up on: the socket then ends with `SOCKET_LOST`.
        """

    @abc.abstractmethod
    def Send(self, buf: Buffer, len: int | None = None) -> None:
        """Send the first `len` bytes of `buf` (all of it when `len` is None).

        Before `SocketConnectComplete` the bytes are cached and sent once connected. The
        caller may reuse `buf` as soon as `Send` returns. Leads to one `SocketSendResult`
        once the bytes have left for the kernel, in `Send` order. On a datagram socket
        (connected UDP, DTLS) each `Send` is one datagram (one record).

        Args:
            buf: the bytes to send.
            len: how many of them; None for `len(buf)`.

        Raises:
            SocketModeError: the socket is a server socket, not yet `Connect`ed, or deleted.
            ValueError: DTLS: the record is larger than the cleartext MTU, or empty.
        """

    def SendTo(self, buf: Buffer, len: int | None, dstAddr: IPaddr | str, dstPort: int) -> None:
        """UDP only: send one datagram to `dstAddr:dstPort`; other kinds ignore the call.

        Leads to `SocketSendResult`, as `Send` does.

        Args:
            buf: the datagram.
            len: how many bytes of `buf`; None for `len(buf)`.
            dstAddr: the destination, an `ipaddress` object or an IP literal.
            dstPort: the destination port.
        """

    @abc.abstractmethod
    def Recv(
        self, buf: bytearray | memoryview, len: int | None = None, recvPartial: bool = False
    ) -> None:
        """Receive into the caller's `buf`.

        Leads to `SocketRecvResult(socket, buf, n)` (a bound UDP socket:
        `SocketRecvFromResult(socket, buf, n, srcAddr, srcPort)`). A stream socket
        completes with exactly `len` bytes, or with 1..`len` as soon as any are there when
        `recvPartial` is set; a datagram socket delivers one datagram per `Recv`. Several
        `Recv` calls queue in order. While no `Recv` is pending, reading pauses once a
        bounded amount is held.

        Args:
            buf: a writable buffer; it is the app's again once its result has run.
            len: how many bytes to receive; None for `len(buf)`.
            recvPartial: complete with whatever has arrived (stream sockets).

        Raises:
            SocketModeError: the socket is a listening socket, not yet connected or bound,
                or deleted.
            ValueError: `len` is not between 1 and the size of `buf`.
        """

    @abc.abstractmethod
    def RecvCancel(self) -> None:
        """Cancel every pending `Recv`: `SocketRecvCanceled(socket, buf)` follows for each,
        in order."""

    @abc.abstractmethod
    def SetUser(self, user: USocket) -> None:
        """Send this socket's callbacks to `user` from now on.

        Args:
            user: the new user.
        """

    @abc.abstractmethod
    def GetLocalAddress(self) -> tuple[str, int]:
        """The local address and port: `("", 0)` until `Bind` or `Connect` completed.

        Returns:
            The IP literal (or the path of a local socket) and the port.
        """

    @abc.abstractmethod
    def SetQoS(self, traffic: QosTrafficType) -> None:
        """Mark the socket's outgoing packets with the DSCP of `traffic`.

        `QOS_BEST_EFFORT` is DSCP 0, `QOS_AUDIO_VIDEO` AF41 (34), `QOS_VOICE` EF (46),
        written to IP_TOS / IPV6_TCLASS as DSCP << 2. Set before `Bind`/`Connect`, it
        applies once the socket is open; set on a listener, to every accepted connection.
        Local sockets ignore it.

        Args:
            traffic: a `QosTrafficType`, or its SDK value 0, 1 or 2.

        Raises:
            ValueError: `traffic` is no traffic class.
        """

    @abc.abstractmethod
    def Delete(self) -> None:
        """Release the socket (the SDK's `delete socket`): it closes at once and no
        callback follows, not even `SocketShutdown`.

        Raises:
            SocketModeError: the socket was already deleted.
        """

    def GetSrtpProfile(self) -> str | None:
        """DTLS-SRTP, once the handshake is complete: the negotiated SRTP profile.

        Returns:
            e.g. `"SRTP_AES128_CM_SHA1_80"`; None on other sockets or before the handshake.
        """
        return None

    def GetSrtpKeys(self) -> bytes | None:
        """DTLS-SRTP, once the handshake is complete: the keying material exported with
        the RFC 5764 label (`EXTRACTOR-dtls_srtp`).

        Returns:
            60 bytes for SRTP_AES128_CM_SHA1_80, 56 for SRTP_AEAD_AES_128_GCM; None on
            other sockets or before the handshake.
        """
        return None


class ISocketContext(abc.ABC):
    """Certificates, trust and protocol options for TLS and DTLS sockets.

    Made by any provider's `CreateSocketContext`; passed to `CreateSocket` or
    `UpgradeToTLSSocket`. Sockets of other kinds ignore it. One context may serve many
    sockets; a change applies to connections made afterwards.
    """

    @abc.abstractmethod
    def SetServerCertificate(
        self, cert: bytes, certLen: int | None = None, hostName: str | None = None
    ) -> None:
        """The certificate a server socket presents.

        Without one, a server uses a self-signed certificate generated once per process.

        Args:
            cert: PEM holding the private key and the certificate chain (leaf first).
            certLen: how many bytes of `cert`; None for all.
            hostName: serve this certificate to clients that ask for this name by SNI;
                None for the default.

        Raises:
            ValueError: the buffer is malformed, has no key or no certificate, or the key
                does not match the certificate.
        """

    @abc.abstractmethod
    def SetClientCertificate(
        self, cert: bytes, certLen: int | None = None, hostName: str | None = None
    ) -> None:
        """The certificate a client socket presents when the server asks for one.

        Args:
            cert: PEM holding the private key and the certificate chain.
            certLen: how many bytes of `cert`; None for all.
            hostName: kept for the SDK's signature.

        Raises:
            ValueError: as for `SetServerCertificate`.
        """

    @abc.abstractmethod
    def DisableClientCertificate(self) -> None:
        """Client sockets send no certificate."""

    @abc.abstractmethod
    def GetCertificateFingerprint(self) -> bytes:
        """The SHA-256 of the DER of the server certificate in use.

        Returns:
            32 bytes (for an SDP's `a=fingerprint`, say).
        """

    @abc.abstractmethod
    def SetALPNProtocols(self, alpnList: Sequence[str]) -> None:
        """The ALPN protocols to offer (client) or accept (server), in order of preference.

        The server picks by its own order; each side's `SocketAcceptSelectedALPNProtocol`
        sees the result.

        Args:
            alpnList: protocol names, e.g. `["h2", "http/1.1"]`.
        """

    def SetALPNProcotols(self, alpnList: Sequence[str]) -> None:
        """The SDK's spelling of `SetALPNProtocols`.

        Args:
            alpnList: protocol names, in order of preference.
        """
        self.SetALPNProtocols(alpnList)

    @abc.abstractmethod
    def EnableDTLS(self, useSrtp: bool) -> None:
        """TLS-provider sockets made with this context speak DTLS over UDP.

        Args:
            useSrtp: negotiate DTLS-SRTP keying; a handshake that agrees no SRTP profile
                then fails.
        """

    @abc.abstractmethod
    def SetTrustedCertificates(self, pem: bytes) -> None:
        """Beyond the SDK: a CA bundle. Clients verify servers against it instead of the
        system store; servers given one require and verify client certificates.

        Args:
            pem: one or more PEM certificates.
        """

    @abc.abstractmethod
    def DisableCertificateVerification(self) -> None:
        """Beyond the SDK: verify no peer (an explicit opt-out; never the default)."""

    @abc.abstractmethod
    def SetTLSProfile(self, profile: str) -> None:
        """Beyond the SDK: "intermediate" (the default: TLS 1.2 and 1.3) or "modern"
        (TLS 1.3 only) for TLS sockets made from now on, servers and clients.

        Raises:
            ValueError: any other name.
        """

    @abc.abstractmethod
    def Delete(self) -> None:
        """Release the context; sockets made with it live on. Using it afterwards raises
        `SocketModeError`."""


class ISocketProvider(abc.ABC):
    """Makes sockets of one kind: TCP, TLS (and DTLS), UDP or local.

    Get one from `CreateTCPSocketProvider()`, `CreateTLSSocketProvider(tcp)`,
    `CreateUDPSocketProvider()` or `CreateLocalSocketProvider()`. Sockets outlive the
    provider that made them.
    """

    @abc.abstractmethod
    def CreateSocket(
        self,
        iomux: IIoMux,
        user: USocket | None,
        log: IInstanceLog,
        useIPv6: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """A new socket of the provider's kind; choose its mode with `Connect` or `Bind`.

        Args:
            iomux: the loop the socket runs on.
            user: receives the socket's callbacks; None (as SDK apps do before `SetUser`)
                holds them until `SetUser` names a user, then delivers them in order.
            log: where the socket logs, under its kind's flag (`LOG_TCP`, `LOG_TLS`,
                `LOG_UDP`, `LOG_LDS`, `LOG_DTLS`).
            useIPv6: an IPv6 socket (dual-stack when bound to all interfaces).
            socketContext: TLS/DTLS: certificates, trust, ALPN, DTLS; other kinds ignore it.

        Returns:
            The socket; the library holds it until `Delete()`.
        """

    @abc.abstractmethod
    def CreateSocketContext(self, log: IInstanceLog) -> ISocketContext:
        """A new context, on every provider as in the SDK; only TLS and DTLS sockets use it.

        Args:
            log: where the context logs (under `LOG_TLS`).

        Returns:
            A context to set up, then pass to `CreateSocket` or `UpgradeToTLSSocket`.
        """

    def UpgradeToTLSSocket(
        self,
        fromTCPSocket: ISocket,
        iomux: IIoMux,
        user: USocket,
        log: IInstanceLog,
        initServerSide: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """TLS provider only: run TLS over a connected TCP socket (DTLS over UDP).

        The new socket owns `fromTCPSocket` from then on. Leads to
        `SocketUpgradeToTLSComplete` on the new socket, or to
        `SocketShutdown(SOCKET_TLS_HANDSHAKE_FAILED)`.

        Args:
            fromTCPSocket: the connected socket to upgrade.
            iomux: the loop.
            user: the user of the new socket.
            log: where the new socket logs.
            initServerSide: play the server's part of the handshake.
            socketContext: certificates and options; None for the defaults.

        Returns:
            The TLS (or DTLS) socket.

        Raises:
            SocketModeError: on a provider other than TLS, or `fromTCPSocket` is already
                TLS or not connected.
        """
        raise SocketModeError(
            "UpgradeToTLSSocket: only the TLS provider upgrades sockets; call it on "
            "CreateTLSSocketProvider(...)"
        )

    def Delete(self) -> None:
        """Release the provider; the sockets it made live on."""
