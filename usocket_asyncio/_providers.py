"""The socket providers: what `CreateTCPSocketProvider`, `CreateTLSSocketProvider`,
`CreateUDPSocketProvider` and `CreateLocalSocketProvider` return.

A provider checks what every kind checks (the loop's thread, the user) and makes the
socket of its kind. The TLS provider chooses by the context and the socket: TLS over
TCP, or DTLS over UDP for a context with `EnableDTLS` (and for `UpgradeToTLSSocket` of
a UDP socket). So the TLS and DTLS sockets stand side by side over the shared base,
neither knowing the other; only this module knows both. Providers make sockets, they
are not on any per-request path: this module stays Python.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard, TypeVar, cast

from ._api import ISocket, ISocketContext, ISocketProvider, USocket
from ._base import HeldCallbacks, SocketBase, check_user
from ._context import SocketContext, as_context
from ._dtls import DTLSSocket
from ._local import LocalSocket
from ._stream import StreamSocket
from ._tcp import TCPSocket
from ._tls import TLSSocket
from ._types import SocketModeError
from ._udp import UDPSocket

if TYPE_CHECKING:
    from ._iomux import IIoMux
    from ._log import IInstanceLog

MakeSocket = Callable[["IIoMux", Any, "IInstanceLog", bool], SocketBase]
"""What makes a provider's socket from the checked `CreateSocket` arguments. (The sockets
are `ISocket`s by registration, not by inheritance, see `SocketBase`; a type checker
does not follow a registration, so what the app gets is cast here.)"""


class SocketProviderBase(ISocketProvider):
    """A provider: `CreateSocket` checks the arguments every kind checks, then makes a
    `SOCKET` (or what the kind's `_maker` gives, where the kind chooses)."""

    __slots__ = ()

    SOCKET: ClassVar[type[SocketBase]]

    def CreateSocket(
        self,
        iomux: IIoMux,
        user: USocket | None,
        log: IInstanceLog,
        useIPv6: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """See `ISocketProvider.CreateSocket`; what `useIPv6` and `socketContext` mean
        for the kind: see the provider's class. A listening socket made with user None
        denies the connections that come before `SetUser`.

        Raises:
            TypeError: `user` is no `USocket`.
        """
        iomux.on_loop("CreateSocket")
        target: Any = user
        if user is None:
            target = HeldCallbacks()
        else:
            check_user(user)
        return cast(ISocket, self._maker(socketContext, log)(iomux, target, log, useIPv6))

    def CreateSocketContext(self, log: IInstanceLog) -> ISocketContext:
        """A new context, on every provider as in the SDK; only TLS and DTLS sockets use
        it, the other kinds ignore one passed to `CreateSocket`."""
        return SocketContext(log)

    def _maker(self, socketContext: ISocketContext | None, log: IInstanceLog) -> MakeSocket:
        """Hook: what makes the new socket (`SOCKET`; the context is the TLS kind's)."""
        return self.SOCKET


class TCPSocketProvider(SocketProviderBase):
    """Makes TCP sockets: `useIPv6` picks IPv6 for names and for `Bind(None)`;
    `socketContext` is ignored."""

    __slots__ = ()
    SOCKET = TCPSocket


class LocalSocketProvider(SocketProviderBase):
    """Makes local (Unix domain stream) sockets: `Connect(path)` or `Bind(path)`;
    `useIPv6` and `socketContext` are ignored."""

    __slots__ = ()
    SOCKET = LocalSocket


class UDPSocketProvider(SocketProviderBase):
    """Makes UDP sockets: `useIPv6` picks IPv6 for names and for `Bind(None)` ("::",
    which receives IPv4 too). `socketContext` is ignored: DTLS sockets come from the
    TLS provider."""

    __slots__ = ()
    SOCKET = UDPSocket


class TLSSocketProvider(SocketProviderBase):
    """Makes TLS sockets (and DTLS ones, for contexts with `EnableDTLS`).

    `CreateSocket` makes a TLS socket (DTLS with a context on which `EnableDTLS` was
    called); `useIPv6` picks IPv6 for names and for `Bind(None)`. As a client,
    `Connect(address, serverName)` leads to `SocketConnectComplete` once the handshake
    succeeded (after `SocketAcceptSelectedALPNProtocol`, when a protocol was
    negotiated), or to `SocketShutdown` with a connect reason or
    `SOCKET_TLS_HANDSHAKE_FAILED`/`SOCKET_ALPN_SELECTION_FAILED`. As a server, each
    accepted socket gets `SocketAcceptComplete` after its handshake, or
    `SocketShutdown(SOCKET_TLS_HANDSHAKE_FAILED)`. Without a context a client verifies
    against the system store and a server uses the default self-signed certificate.
    """

    __slots__ = ("_tcp",)
    SOCKET = TLSSocket

    def __init__(self, tcpSocketProvider: ISocketProvider | None) -> None:
        if tcpSocketProvider is not None and not isinstance(tcpSocketProvider, ISocketProvider):
            raise TypeError("CreateTLSSocketProvider takes the TCP socket provider (or None)")
        self._tcp = tcpSocketProvider

    def _maker(self, socketContext: ISocketContext | None, log: IInstanceLog) -> MakeSocket:
        ctx = as_context(socketContext, log)
        kind: type[TLSSocket | DTLSSocket] = DTLSSocket if ctx.dtls_enabled else TLSSocket
        return functools.partial(kind, ctx=ctx)

    def UpgradeToTLSSocket(
        self,
        fromTCPSocket: ISocket,
        iomux: IIoMux,
        user: USocket,
        log: IInstanceLog,
        initServerSide: bool = False,
        socketContext: ISocketContext | None = None,
    ) -> ISocket:
        """See `ISocketProvider.UpgradeToTLSSocket`. The TCP socket's user gets no
        further callback, and deleting the new socket deletes it. Bytes it still had
        to send go out before the handshake; bytes it had read but not yet delivered
        are taken as the start of the peer's handshake. A connected UDP socket is
        upgraded to DTLS the same way."""
        iomux.on_loop("UpgradeToTLSSocket")
        if _is_a(fromTCPSocket, TLSSocket):
            raise SocketModeError(
                "UpgradeToTLSSocket on a TLS socket: it already speaks TLS; pass the TCP socket"
            )
        check_user(user)
        ctx = as_context(socketContext, log)
        server_side = bool(initServerSide)
        if _is_a(fromTCPSocket, StreamSocket):
            tcp = fromTCPSocket
            tls = TLSSocket(iomux, user, log, tcp._use_ipv6, ctx)
            return _upgrading(tls, lambda: tls._begin_upgrade(tcp, server_side))
        if _is_a(fromTCPSocket, DTLSSocket):
            raise SocketModeError(
                "UpgradeToTLSSocket on a DTLS socket: it already speaks DTLS; pass the UDP socket"
            )
        if not _is_a(fromTCPSocket, UDPSocket):
            raise TypeError("UpgradeToTLSSocket takes a TCP socket (TLS) or a UDP socket (DTLS)")
        udp = fromTCPSocket
        refusal = udp.hand_over_refusal()
        if refusal is not None:
            raise SocketModeError(
                "UpgradeToTLSSocket needs a connected UDP socket: Connect it and upgrade after "
                f"SocketConnectComplete (it is {refusal})"
            )
        dtls = DTLSSocket(iomux, user, log, udp.uses_ipv6(), ctx)
        return _upgrading(dtls, lambda: dtls._begin_upgrade(udp, server_side))


_T = TypeVar("_T")


def _is_a(sock: object, cls: type[_T]) -> TypeGuard[_T]:
    """`isinstance(sock, cls)` read off the type of `sock` itself (its MRO): a
    `__class__` the object claims does not pass for one of the library's socket
    classes, whose fields the upgrade then uses."""
    return cls in type(sock).__mro__


def _upgrading(sock: SocketBase, begin: Callable[[], None]) -> ISocket:
    """`sock` once `begin` took the socket under it over; a socket whose upgrade could
    not begin is forgotten (the app never got it)."""
    try:
        begin()
    except BaseException:
        sock._abandon()
        raise
    return cast(ISocket, sock)


def CreateTCPSocketProvider() -> ISocketProvider:
    """The provider of TCP sockets."""
    return TCPSocketProvider()


def CreateLocalSocketProvider() -> ISocketProvider:
    """The provider of local (Unix domain stream) sockets."""
    return LocalSocketProvider()


def CreateUDPSocketProvider() -> ISocketProvider:
    """The provider of UDP sockets."""
    return UDPSocketProvider()


def CreateTLSSocketProvider(tcpSocketProvider: ISocketProvider | None = None) -> ISocketProvider:
    """The provider of TLS (and DTLS) sockets.

    `tcpSocketProvider` is the SDK's TCP provider argument; None is fine (this
    implementation opens its own connections), e.g. for a provider used only for
    `UpgradeToTLSSocket`.
    """
    return TLSSocketProvider(tcpSocketProvider)
