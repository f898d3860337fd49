"""Fixtures and pytest hooks: the loop matrix, a log, certificates, short paths.

Every socket test takes the `mux` fixture, which runs it once on the default asyncio
loop and once on uvloop, and fails it if anything reached the loop's exception handler
(tests that provoke such errors on purpose take them out of `mux.errors`). The
scaffolding itself is in the `kit` package (tests/kit/).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from kit.loop import ALL_LOG_FLAGS, LOOPS, Mux, Recorder, fd_count, free_port, have_ipv6

import usocket_asyncio
from usocket_asyncio import (
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
    IInstanceLog,
    ISocketProvider,
    LogFlags,
)
from usocket_asyncio._base import LIVE

__all__ = ["ALL_LOG_FLAGS", "LOOPS", "Mux", "Recorder", "fd_count", "free_port", "have_ipv6"]


def pytest_configure(config: pytest.Config) -> None:
    """With USOCKET_ASYNCIO_EXPECT_COMPILED=1 (the compiled run of .ci/run), refuse to
    test the pure-Python package by mistake."""
    if os.environ.get("USOCKET_ASYNCIO_EXPECT_COMPILED") == "1" and not usocket_asyncio.COMPILED:
        raise pytest.UsageError(
            f"expected the compiled build, but {usocket_asyncio.__file__} is pure Python"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if usocket_asyncio.COMPILED:
        skip = pytest.mark.skip(reason="patches module internals; the compiled build fixes them")
        for item in items:
            if "pure_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(params=LOOPS)
def mux(request: pytest.FixtureRequest) -> Iterator[Mux]:
    """An event loop per test, on both asyncio and uvloop."""
    m = Mux(request.param)
    try:
        yield m
        # let pending closes finish (run until nothing is left to do now, not for a fixed
        # time), then nothing may be left in the exception handler
        with contextlib.suppress(Exception):
            m.run_ready()
        assert not m.errors, f"the loop's exception handler was called: {m.errors}"
    finally:
        loop = m.loop
        # a failed test may leave sockets behind: delete them, or uvloop's close() waits on them
        for sock in [s for s in LIVE if getattr(s, "_loop", None) is loop]:
            with contextlib.suppress(Exception):
                sock.Delete()
        with contextlib.suppress(Exception):
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:  # bounded: a task that ignores its cancellation must not hang the run
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def log() -> IInstanceLog:
    """A log with every flag set (tests see the library's log lines in failures)."""
    return IInstanceLog(ALL_LOG_FLAGS)


@pytest.fixture
def mlog() -> IInstanceLog:
    """A log with the media flag set (the media tests' log)."""
    return IInstanceLog(int(LogFlags.LOG_MEDIA))


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short directory for Unix socket paths (the 108-byte limit)."""
    d = tempfile.mkdtemp(prefix="us", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def ca() -> Any:
    """A test CA (trustme) with a certificate for localhost and 127.0.0.1."""
    import trustme

    return trustme.CA()


@pytest.fixture
def prov() -> ISocketProvider:
    """TLS over TCP: the provider of the TLS tests and, with a DTLS context, of the DTLS ones."""
    return CreateTLSSocketProvider(CreateTCPSocketProvider())


@pytest.fixture
def files(ca: Any) -> Iterator[dict[str, str]]:
    """PEM files for the command-line peers (see `kit.certs.write_pems`)."""
    from kit.certs import write_pems  # here: kit.certs imports conformance, which imports us

    d = tempfile.mkdtemp(prefix="tls")
    try:
        yield write_pems(ca, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
