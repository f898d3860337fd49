"""The public names and values of the contract."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from kit.conformance import DATAGRAM_KINDS, STREAM_KINDS, DatagramKind, StreamKind, tls_kind
from kit.loop import Mux, Recorder

import usocket_asyncio as u
from usocket_asyncio import IInstanceLog


def test_shutdown_reasons_have_the_sdk_values() -> None:
    expected = {
        "SOCKET_SHUTDOWN_NORMAL": 0,
        "SOCKET_SHUTDOWN_BY_PEER": 1,
        "SOCKET_LOST": 2,
        "SOCKET_ADDRESS_INVALID": 3,
        "SOCKET_OPEN_FAILED": 4,
        "SOCKET_CONNECT_FAILED": 5,
        "SOCKET_CONNECT_REJECTED": 6,
        "SOCKET_BIND_FAILED": 7,
        "SOCKET_LISTEN_FAILED": 8,
        "SOCKET_ACCEPT_FAILED": 9,
        "SOCKET_TLS_HANDSHAKE_FAILED": 10,
        "SOCKET_ADDR_IN_USE": 11,
        "SOCKET_ALPN_SELECTION_FAILED": 12,
    }
    assert {m.name: int(m) for m in u.ShutdownReason} == expected
    for name, value in expected.items():
        assert getattr(u, name) == value
        assert getattr(u, name) is u.ShutdownReason[name]
    assert u.shutdownreason_t is u.ShutdownReason


# Every flag of the SDK's common/os/debug.h (innovaphone 13r1 SDK), with its value.
SDK_LOG_FLAGS = {
    "LOG_APP": 0x1,
    "LOG_DATABASE": 0x2,
    "LOG_DB_FILES": 0x4,
    "LOG_DNS": 0x8,
    "LOG_ETHERNET": 0x10,
    "LOG_FILE": 0x20,
    "LOG_FILES": 0x40,
    "LOG_HTTP_CLIENT": 0x80,
    "LOG_HTTP_FILE": 0x100,
    "LOG_PROCESS": 0x200,
    "LOG_TLS": 0x400,
    "LOG_TCP": 0x800,
    "LOG_LDS": 0x1000,
    "LOG_WEBSERVER_PLUGIN": 0x2000,
    "LOG_WEBSOCKET_CLIENT": 0x4000,
    "LOG_APP_WEBSOCKET": 0x8000,
    "LOG_WEBDAV_SERVICE": 0x10000,
    "LOG_COMMAND": 0x20000,
    "LOG_CONFIG": 0x40000,
    "LOG_TIME": 0x80000,
    "LOG_SMTP": 0x100000,
    "LOG_UDP": 0x200000,
    "LOG_DTLS": 0x400000,
    "LOG_MEDIA": 0x800000,
    "LOG_MEDIA_CHANNEL": 0x1000000,
    "LOG_ICE": 0x2000000,
    "LOG_TURN": 0x4000000,
    "LOG_APPSHARING": 0x8000000,
    "LOG_AUDIO": 0x10000000,
    "LOG_VIDEO": 0x20000000,
    "LOG_BROWSER": 0x40000000,
    "LOG_APPPROXY": 0x80000000,
    "LOG_ALARM_CLIENT": 0x100000000,
    "LOG_WEBSERVER": 0x200000000,
}


def test_log_flags_have_the_sdk_bits() -> None:
    assert {m.name: int(m) for m in u.LogFlags} == SDK_LOG_FLAGS
    for name, value in SDK_LOG_FLAGS.items():
        assert getattr(u, name) is u.LogFlags[name] and getattr(u, name) == value, name
        assert name in u.__all__, name
    assert len(SDK_LOG_FLAGS) == 34
    assert int(u.LOG_WEBSERVER | u.LOG_APP) == 0x200000001  # wider than 32 bits


def test_log_flags_wider_than_32_bits_filter() -> None:
    log = u.IInstanceLog(u.LOG_ALARM_CLIENT)
    assert log.LogFlagSet(u.LOG_ALARM_CLIENT)
    assert not log.LogFlagSet(u.LOG_WEBSERVER) and not log.LogFlagSet(u.LOG_APP)


def test_qos_traffic_types_have_the_sdk_values() -> None:
    assert {m.name: int(m) for m in u.QosTrafficType} == {
        "QOS_BEST_EFFORT": 0,
        "QOS_AUDIO_VIDEO": 1,
        "QOS_VOICE": 2,
    }
    assert u.qostraffictype_t is u.QosTrafficType
    assert u.QOS_AUDIO_VIDEO is u.QosTrafficType.QOS_AUDIO_VIDEO
    assert u.QOS_VOICE is u.QosTrafficType(2)


def test_shutdown_reason_to_str_is_the_name() -> None:
    assert u.SocketShutdownReasonToStr(u.SOCKET_LOST) == "SOCKET_LOST"
    assert u.SocketShutdownReasonToStr(3) == "SOCKET_ADDRESS_INVALID"
    for reason in u.ShutdownReason:
        assert u.SocketShutdownReasonToStr(reason) == reason.name
    assert u.SocketShutdownReasonToStr(99) == "SOCKET_UNKNOWN(99)"


def test_socket_mode_error_is_an_assertion_error() -> None:
    assert issubclass(u.SocketModeError, AssertionError)


def test_all_names_importable() -> None:
    for name in u.__all__:
        assert hasattr(u, name), name


def test_usocket_shutdown_is_abstract() -> None:
    import pytest

    with pytest.raises(TypeError):
        u.USocket()  # type: ignore[abstract]

    class App(u.USocket):
        def SocketShutdown(self, socket: u.ISocket, reason: u.ShutdownReason) -> None:
            pass

    app = App()
    assert app.SocketAcceptSelectedALPNProtocol(None, "h2") is True  # type: ignore[arg-type]


# --------------------------------------------------------------------------- signatures

API_SIGNATURES: dict[str, dict[str, str]] = {
    "ISocketProvider": {
        "CreateSocketContext": "(self, log)",
        "CreateSocket": "(self, iomux, user, log, useIPv6=False, socketContext=None)",
        "UpgradeToTLSSocket": (
            "(self, fromTCPSocket, iomux, user, log, initServerSide=False, socketContext=None)"
        ),
        "Delete": "(self)",
    },
    "ISocketContext": {
        "SetServerCertificate": "(self, cert, certLen=None, hostName=None)",
        "SetClientCertificate": "(self, cert, certLen=None, hostName=None)",
        "DisableClientCertificate": "(self)",
        "GetCertificateFingerprint": "(self)",
        "SetALPNProtocols": "(self, alpnList)",
        "SetALPNProcotols": "(self, alpnList)",
        "EnableDTLS": "(self, useSrtp)",
        "SetTrustedCertificates": "(self, pem)",
        "DisableCertificateVerification": "(self)",
        "Delete": "(self)",
    },
    "ISocket": {
        "Connect": "(self, address, serverName=None)",
        "Bind": "(self, localAddr=None, localPort=0, reuseAddr=False)",
        "Listen": "(self)",
        "Accept": "(self, remoteUser)",
        "Shutdown": "(self)",
        "Send": "(self, buf, len=None)",
        "SendTo": "(self, buf, len, dstAddr, dstPort)",
        "Recv": "(self, buf, len=None, recvPartial=False)",
        "RecvCancel": "(self)",
        "SetUser": "(self, user)",
        "GetLocalAddress": "(self)",
        "SetQoS": "(self, traffic)",
        "Delete": "(self)",
        "GetSrtpProfile": "(self)",
        "GetSrtpKeys": "(self)",
    },
    "USocket": {
        "SocketConnectComplete": "(self, socket)",
        "SocketBindResult": "(self, socket, localAddr, localPort)",
        "SocketListenResult": "(self, socket, remoteAddr, remotePort)",
        "SocketAcceptComplete": "(self, socket)",
        "SocketShutdown": "(self, socket, reason)",
        "SocketSendResult": "(self, socket)",
        "SocketRecvResult": "(self, socket, buf, len)",
        "SocketRecvFromResult": "(self, socket, buf, len, srcAddr, srcPort)",
        "SocketRecvCanceled": "(self, socket, buf)",
        "SocketUpgradeToTLSComplete": "(self, socket)",
        "SocketAcceptSelectedALPNProtocol": "(self, socket, protocol)",
    },
    "IIoMux": {
        "Create": "(*, uvloop=False)",
        "FromLoop": "(loop=None)",
        "Run": "(self)",
        "Terminate": "(self)",
    },
    "ITimer": {
        "__init__": "(self, iomux, user)",
        "Start": "(self, ms)",
        "Cancel": "(self)",
        "IsRunning": "(self)",
    },
    "UTimer": {"TimerOnTimeout": "(self, timer)"},
    "IInstanceLog": {
        "__init__": "(self, logFlags=0, logger=None)",
        "Log": "(self, flag, fmt, *args)",
        "HexDump": "(self, flag, buf, len=None)",
        "LogFlagSet": "(self, flag)",
        "SetLogFlags": "(self, flags)",
    },
}
FACTORIES = {
    "CreateTCPSocketProvider": "()",
    "CreateTLSSocketProvider": "(tcpSocketProvider=None)",
    "CreateUDPSocketProvider": "()",
    "CreateLocalSocketProvider": "()",
}


def plain_signature(fn: Any) -> str:
    """A signature as API.md writes it: names, defaults and markers, no annotations."""
    sig = inspect.signature(fn)
    # the compiled build's methods take `self` positionally only: `(self, /, ...)`
    return str(sig.replace(
        parameters=[
            p.replace(annotation=p.empty, kind=p.POSITIONAL_OR_KEYWORD)
            if p.name == "self" else p.replace(annotation=p.empty)
            for p in sig.parameters.values()
        ],
        return_annotation=sig.empty,
    ))  # fmt: skip


def test_the_public_signatures_are_api_md() -> None:
    """Every name API.md lists, with its parameter names and defaults (apps pass them by
    keyword: useIPv6=, socketContext=, recvPartial=, len=)."""
    got = {
        cls: {name: plain_signature(getattr(getattr(u, cls), name)) for name in methods}
        for cls, methods in API_SIGNATURES.items()
    }
    assert got == API_SIGNATURES
    assert {name: plain_signature(getattr(u, name)) for name in FACTORIES} == FACTORIES
    assert u.shutdownreason_t is u.ShutdownReason
    assert isinstance(u.IIoMux.loop, property)


@pytest.mark.parametrize("name", ["tcp", "local", "tls", "dtls", "udp"])
def test_each_kinds_classes_keep_the_signatures(
    mux: Mux, log: IInstanceLog, ca: Any, name: str
) -> None:
    """The concrete provider, socket and context classes of each kind keep the
    parameter names and defaults of the documented ones."""
    kinds: dict[str, StreamKind | DatagramKind] = {
        "tcp": STREAM_KINDS["tcp4"],
        "local": STREAM_KINDS["local"],
        "tls": tls_kind(ca, "tls13"),
        "dtls": DATAGRAM_KINDS["dtls"],
        "udp": DATAGRAM_KINDS["udp4-bound"],
    }
    kind = kinds[name]
    prov = kind.provider()
    ctx = kind.client_context(prov, log)
    sock = prov.CreateSocket(mux, Recorder(), log, False, ctx)
    pairs: list[tuple[Any, str]] = [(prov, "ISocketProvider"), (sock, "ISocket")]
    if ctx is not None:
        pairs.append((ctx, "ISocketContext"))
    for obj, api in pairs:
        for meth, want in API_SIGNATURES[api].items():
            assert plain_signature(getattr(type(obj), meth)) == want, (type(obj), meth)
    sock.Delete()
