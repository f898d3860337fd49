"""usocket_asyncio: the innovaphone App Platform SDK socket interface on asyncio."""

from . import _stream
from ._api import ISocket, ISocketContext, ISocketProvider, USocket
from ._dns import IDns, UDns
from ._idtls import (
    DTLS_OPTION_NO_COOKIE,
    DTLS_OPTION_NO_MUTUAL,
    DTLS_OPTION_USE_SRTP,
    IDtls,
    UDtls,
)
from ._iomux import IIoMux, ITimer, UTimer
from ._local import CreateLocalSocketProvider
from ._log import IInstanceLog
from ._srtp import ISrtpSession, SrtpKeys
from ._tcp import CreateTCPSocketProvider
from ._tls import CreateTLSSocketProvider
from ._types import (
    LOG_APP,
    LOG_DTLS,
    LOG_LDS,
    LOG_TCP,
    LOG_TLS,
    LOG_UDP,
    QOS_AUDIO_VIDEO,
    QOS_BEST_EFFORT,
    QOS_VOICE,
    SOCKET_ACCEPT_FAILED,
    SOCKET_ADDR_IN_USE,
    SOCKET_ADDRESS_INVALID,
    SOCKET_ALPN_SELECTION_FAILED,
    SOCKET_BIND_FAILED,
    SOCKET_CONNECT_FAILED,
    SOCKET_CONNECT_REJECTED,
    SOCKET_LISTEN_FAILED,
    SOCKET_LOST,
    SOCKET_OPEN_FAILED,
    SOCKET_SHUTDOWN_BY_PEER,
    SOCKET_SHUTDOWN_NORMAL,
    SOCKET_TLS_HANDSHAKE_FAILED,
    IPaddr,
    LogFlags,
    QosTrafficType,
    ShutdownReason,
    SocketModeError,
    shutdownreason_t,
)
from ._udp import CreateUDPSocketProvider

COMPILED: bool = not _stream.__file__.endswith(".py")
"""True when the socket engine runs compiled (built with USOCKET_ASYNCIO_COMPILE=1)."""

__all__ = [
    "COMPILED",
    "DTLS_OPTION_NO_COOKIE",
    "DTLS_OPTION_NO_MUTUAL",
    "DTLS_OPTION_USE_SRTP",
    "LOG_APP",
    "LOG_DTLS",
    "LOG_LDS",
    "LOG_TCP",
    "LOG_TLS",
    "LOG_UDP",
    "QOS_AUDIO_VIDEO",
    "QOS_BEST_EFFORT",
    "QOS_VOICE",
    "SOCKET_ACCEPT_FAILED",
    "SOCKET_ADDRESS_INVALID",
    "SOCKET_ADDR_IN_USE",
    "SOCKET_ALPN_SELECTION_FAILED",
    "SOCKET_BIND_FAILED",
    "SOCKET_CONNECT_FAILED",
    "SOCKET_CONNECT_REJECTED",
    "SOCKET_LISTEN_FAILED",
    "SOCKET_LOST",
    "SOCKET_OPEN_FAILED",
    "SOCKET_SHUTDOWN_BY_PEER",
    "SOCKET_SHUTDOWN_NORMAL",
    "SOCKET_TLS_HANDSHAKE_FAILED",
    "CreateLocalSocketProvider",
    "CreateTCPSocketProvider",
    "CreateTLSSocketProvider",
    "CreateUDPSocketProvider",
    "IDns",
    "IDtls",
    "IInstanceLog",
    "IIoMux",
    "IPaddr",
    "ISocket",
    "ISocketContext",
    "ISocketProvider",
    "ISrtpSession",
    "ITimer",
    "LogFlags",
    "QosTrafficType",
    "ShutdownReason",
    "SocketModeError",
    "SrtpKeys",
    "UDns",
    "UDtls",
    "USocket",
    "UTimer",
    "shutdownreason_t",
]
