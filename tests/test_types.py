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


def test_log_flags_have_the_sdk_bits() -> None:
    expected = {
        "LOG_APP": 0x1,
        "LOG_TLS": 0x400,
        "LOG_TCP": 0x800,
        "LOG_LDS": 0x1000,
        "LOG_UDP": 0x200000,
        "LOG_DTLS": 0x400000,
    }
    for name, value in expected.items():
        assert int(getattr(u, name)) == value
        assert int(u.LogFlags[name]) == value


def test_qos_dscp_values() -> None:
    assert int(u.QOS_BEST_EFFORT) == 0
    assert int(u.QOS_AUDIO_VIDEO) == 34  # AF41
    assert int(u.QOS_VOICE) == 46  # EF


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
