"""The SDK's plain types: shutdown reasons, log flags, QoS classes, addresses, errors."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from typing import Final, TypeAlias

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
    """The SDK's log flag bits (`common/os/debug.h`), every one of them, with its values.

    A socket logs under the flag of its kind: TCP `LOG_TCP`, TLS `LOG_TLS`, UDP `LOG_UDP`,
    local `LOG_LDS`, DTLS `LOG_DTLS`. The last two flags are wider than 32 bits, as in the
    SDK, whose log mask is 64 bits wide.
    """

    LOG_APP = 0x1
    LOG_DATABASE = 0x2
    LOG_DB_FILES = 0x4
    LOG_DNS = 0x8
    LOG_ETHERNET = 0x10
    LOG_FILE = 0x20
    LOG_FILES = 0x40
    LOG_HTTP_CLIENT = 0x80
    LOG_HTTP_FILE = 0x100
    LOG_PROCESS = 0x200
    LOG_TLS = 0x400
    LOG_TCP = 0x800
    LOG_LDS = 0x1000
    LOG_WEBSERVER_PLUGIN = 0x2000
    LOG_WEBSOCKET_CLIENT = 0x4000
    LOG_APP_WEBSOCKET = 0x8000
    LOG_WEBDAV_SERVICE = 0x10000
    LOG_COMMAND = 0x20000
    LOG_CONFIG = 0x40000
    LOG_TIME = 0x80000
    LOG_SMTP = 0x100000
    LOG_UDP = 0x200000
    LOG_DTLS = 0x400000
    LOG_MEDIA = 0x800000
    LOG_MEDIA_CHANNEL = 0x1000000
    LOG_ICE = 0x2000000
    LOG_TURN = 0x4000000
    LOG_APPSHARING = 0x8000000
    LOG_AUDIO = 0x10000000
    LOG_VIDEO = 0x20000000
    LOG_BROWSER = 0x40000000
    LOG_APPPROXY = 0x80000000
    LOG_ALARM_CLIENT = 0x100000000
    LOG_WEBSERVER = 0x200000000


LOG_APP = LogFlags.LOG_APP
LOG_DATABASE = LogFlags.LOG_DATABASE
LOG_DB_FILES = LogFlags.LOG_DB_FILES
LOG_DNS = LogFlags.LOG_DNS
LOG_ETHERNET = LogFlags.LOG_ETHERNET
LOG_FILE = LogFlags.LOG_FILE
LOG_FILES = LogFlags.LOG_FILES
LOG_HTTP_CLIENT = LogFlags.LOG_HTTP_CLIENT
LOG_HTTP_FILE = LogFlags.LOG_HTTP_FILE
LOG_PROCESS = LogFlags.LOG_PROCESS
LOG_TLS = LogFlags.LOG_TLS
LOG_TCP = LogFlags.LOG_TCP
LOG_LDS = LogFlags.LOG_LDS
LOG_WEBSERVER_PLUGIN = LogFlags.LOG_WEBSERVER_PLUGIN
LOG_WEBSOCKET_CLIENT = LogFlags.LOG_WEBSOCKET_CLIENT
LOG_APP_WEBSOCKET = LogFlags.LOG_APP_WEBSOCKET
LOG_WEBDAV_SERVICE = LogFlags.LOG_WEBDAV_SERVICE
LOG_COMMAND = LogFlags.LOG_COMMAND
LOG_CONFIG = LogFlags.LOG_CONFIG
LOG_TIME = LogFlags.LOG_TIME
LOG_SMTP = LogFlags.LOG_SMTP
LOG_UDP = LogFlags.LOG_UDP
LOG_DTLS = LogFlags.LOG_DTLS
LOG_MEDIA = LogFlags.LOG_MEDIA
LOG_MEDIA_CHANNEL = LogFlags.LOG_MEDIA_CHANNEL
LOG_ICE = LogFlags.LOG_ICE
LOG_TURN = LogFlags.LOG_TURN
LOG_APPSHARING = LogFlags.LOG_APPSHARING
LOG_AUDIO = LogFlags.LOG_AUDIO
LOG_VIDEO = LogFlags.LOG_VIDEO
LOG_BROWSER = LogFlags.LOG_BROWSER
LOG_APPPROXY = LogFlags.LOG_APPPROXY
LOG_ALARM_CLIENT = LogFlags.LOG_ALARM_CLIENT
LOG_WEBSERVER = LogFlags.LOG_WEBSERVER


class QosTrafficType(enum.IntEnum):
    """Traffic classes for `ISocket.SetQoS`, with the SDK's values (`qostraffictype_t`).

    `SetQoS` marks the packets with the DSCP of the class: 0 for best effort, AF41 (34)
    for audio/video, EF (46) for voice (IP_TOS / IPV6_TCLASS = DSCP << 2).
    """

    QOS_BEST_EFFORT = 0
    QOS_AUDIO_VIDEO = 1
    QOS_VOICE = 2


qostraffictype_t = QosTrafficType

QOS_BEST_EFFORT = QosTrafficType.QOS_BEST_EFFORT
QOS_AUDIO_VIDEO = QosTrafficType.QOS_AUDIO_VIDEO
QOS_VOICE = QosTrafficType.QOS_VOICE

QOS_DSCP: Final[Mapping[QosTrafficType, int]] = {
    QosTrafficType.QOS_BEST_EFFORT: 0,
    QosTrafficType.QOS_AUDIO_VIDEO: 34,  # AF41
    QosTrafficType.QOS_VOICE: 46,  # EF
}
"""The DSCP code point `SetQoS` marks each traffic class with."""


def SocketShutdownReasonToStr(reason: int) -> str:
    """The SDK's helper: the name of a shutdown reason, e.g. `"SOCKET_LOST"`.

    Args:
        reason: a `ShutdownReason` or its integer value.

    Returns:
        The reason's name; for a value the SDK does not define, `"SOCKET_UNKNOWN(n)"`.
    """
    try:
        return ShutdownReason(reason).name
    except ValueError:
        return f"SOCKET_UNKNOWN({int(reason)})"


class SocketModeError(AssertionError):
    """A call the SDK would assert on: wrong mode, wrong moment, or use after Delete.

    Raised synchronously by the call itself; never raised for network failures, which
    arrive as a `ShutdownReason` in `USocket.SocketShutdown`.
    """
