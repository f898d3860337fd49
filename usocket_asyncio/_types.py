"""The SDK's plain types: shutdown reasons, log flags, QoS classes, addresses, errors."""

from __future__ import annotations

import enum
import ipaddress
from typing import TypeAlias

IPaddr: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class ShutdownReason(enum.IntEnum):
    """Why a socket ended; passed to `USocket.SocketShutdown`. Values are the SDK's."""

    SOCKET_SHUTDOWN_NORMAL = 0
    SOCKET_SHUTDOWN_BY_PEER = 1
    SOCKET_LOST = 2
    SOCKET_ADDRESS_INVALID = 3
    SOCKET_OPEN_FAILED = 4
    SOCKET_CONNECT_FAILED = 5
    SOCKET_CONNECT_REJECTED = 6
    SOCKET_BIND_FAILED = 7
    SOCKET_LISTEN_FAILED = 8
    SOCKET_ACCEPT_FAILED = 9
    SOCKET_TLS_HANDSHAKE_FAILED = 10
    SOCKET_ADDR_IN_USE = 11
    SOCKET_ALPN_SELECTION_FAILED = 12


shutdownreason_t = ShutdownReason

SOCKET_SHUTDOWN_NORMAL = ShutdownReason.SOCKET_SHUTDOWN_NORMAL
SOCKET_SHUTDOWN_BY_PEER = ShutdownReason.SOCKET_SHUTDOWN_BY_PEER
SOCKET_LOST = ShutdownReason.SOCKET_LOST
SOCKET_ADDRESS_INVALID = ShutdownReason.SOCKET_ADDRESS_INVALID
SOCKET_OPEN_FAILED = ShutdownReason.SOCKET_OPEN_FAILED
SOCKET_CONNECT_FAILED = ShutdownReason.SOCKET_CONNECT_FAILED
SOCKET_CONNECT_REJECTED = ShutdownReason.SOCKET_CONNECT_REJECTED
SOCKET_BIND_FAILED = ShutdownReason.SOCKET_BIND_FAILED
SOCKET_LISTEN_FAILED = ShutdownReason.SOCKET_LISTEN_FAILED
SOCKET_ACCEPT_FAILED = ShutdownReason.SOCKET_ACCEPT_FAILED
SOCKET_TLS_HANDSHAKE_FAILED = ShutdownReason.SOCKET_TLS_HANDSHAKE_FAILED
SOCKET_ADDR_IN_USE = ShutdownReason.SOCKET_ADDR_IN_USE
SOCKET_ALPN_SELECTION_FAILED = ShutdownReason.SOCKET_ALPN_SELECTION_FAILED


class LogFlags(enum.IntFlag):
    """The SDK's log flag bits. A socket logs under the flag of its kind."""

    LOG_APP = 0x1
    LOG_UDP = 0x200000
    LOG_TLS = 0x400
    LOG_TCP = 0x800
    LOG_LDS = 0x1000
    LOG_DTLS = 0x400000


LOG_APP = LogFlags.LOG_APP
LOG_TLS = LogFlags.LOG_TLS
LOG_TCP = LogFlags.LOG_TCP
LOG_LDS = LogFlags.LOG_LDS
LOG_UDP = LogFlags.LOG_UDP
LOG_DTLS = LogFlags.LOG_DTLS


class QosTrafficType(enum.IntEnum):
    """Traffic classes for `ISocket.SetQoS`; the value is the DSCP code point."""

    QOS_BEST_EFFORT = 0
    QOS_AUDIO_VIDEO = 34  # AF41
    QOS_VOICE = 46  # EF


QOS_BEST_EFFORT = QosTrafficType.QOS_BEST_EFFORT
QOS_AUDIO_VIDEO = QosTrafficType.QOS_AUDIO_VIDEO
QOS_VOICE = QosTrafficType.QOS_VOICE


class SocketModeError(AssertionError):
    """A call the SDK would assert on: wrong mode, wrong moment, or use after Delete.

    Raised synchronously by the call itself; never raised for network failures, which
    arrive as a `ShutdownReason` in `USocket.SocketShutdown`.
    """
