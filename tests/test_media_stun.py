"""IMedia's server-reflexive gathering (`stunServers`): against a real STUN server
(coturn's turnserver, STUN only, on loopback), by address and by name, and against a
server that never answers (Initialize still completes, with the host candidates)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kit.loop import Mux
from kit.media import MediaRecorder
from kit.stunserver import TURNSERVER, coturn

from usocket_asyncio import (
    CHANNEL_CANDIDATE_HOST,
    CreateMediaProvider,
    IInstanceLog,
    LogFlags,
    _ice,
)


@pytest.fixture
def stun_server(tmp_path: Any) -> Iterator[tuple[str, int]]:
    if TURNSERVER is None:
        pytest.skip("turnserver is not installed (Debian package coturn; .ci/run installs it)")
    with coturn(str(tmp_path)) as address:
        yield address


def initialize(mux: Mux, servers: list[str], timeout: float = 10) -> tuple[Any, MediaRecorder]:
    user = MediaRecorder()
    media = CreateMediaProvider().CreateMedia(mux, user, IInstanceLog(int(LogFlags.LOG_MEDIA)))
    media.Initialize(None, None, None, 0, 0, stunServers=servers, localAddresses=["127.0.0.1"])
    mux.run_until(lambda: user.initialized, timeout=timeout, what="MediaInitializeComplete")
    return media, user


def gathered(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "type='srflx'" in r.getMessage()]


@pytest.mark.parametrize("by_name", [False, True], ids=["address", "name"])
def test_srflx_from_a_real_stun_server(
    mux: Mux, stun_server: tuple[str, int], caplog: pytest.LogCaptureFixture, by_name: bool
) -> None:
    caplog.set_level(logging.INFO)
    host = "localhost" if by_name else stun_server[0]
    media, user = initialize(mux, [f"{host}:{stun_server[1]}"])
    # the server answered with this socket's own address (loopback: no NAT), which the
    # agent does not list again: the candidates are the host one
    (line,) = gathered(caplog)
    assert f"addr='127.0.0.1', port={media.localPort}" in line
    assert [c.type for c in user.config.ice.candidateList] == [CHANNEL_CANDIDATE_HOST]
    media.Close()
    mux.run_until(lambda: user.closed)


def test_a_silent_stun_server_does_not_hold_initialize(
    mux: Mux, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(_ice, "GATHER_RTO", 0.05)
    monkeypatch.setattr(_ice, "GATHER_SENDS", 2)
    monkeypatch.setattr(_ice, "GATHER_LAST_WAIT", 0.1)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.settimeout(1.0)
    try:
        port = silent.getsockname()[1]
        media, user = initialize(mux, [f"127.0.0.1:{port}"], timeout=5)
        assert user.config is not None and len(user.config.ice.candidateList) == 1
        assert any(f"STUN server ('127.0.0.1', {port})" in r.getMessage() for r in caplog.records)
        assert len(silent.recv(2048)) >= 20  # the Binding request did go out
        media.Close()
        mux.run_until(lambda: user.closed)
    finally:
        silent.close()
