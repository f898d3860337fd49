"""The public names and values of the contract."""

from __future__ import annotations

import usocket_asyncio as u


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
