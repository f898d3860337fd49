"""IDns / UDns on both loops: names from /etc/hosts, IP literals, a name that cannot
resolve (RFC 2606 `.invalid`), a lookup that never answers (a fake getaddrinfo), all=True's
order and end marker, callbacks never inside the call, and a callback's exception in the
loop's exception handler."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
from typing import Any

import pytest
from kit.loop import LOOPS, Mux

from usocket_asyncio import IDns, IInstanceLog, IIoMux, SocketModeError, UDns, _dns

LOG_DNS = 0x8  # LogFlags.LOG_DNS

Result = tuple[str | None, bool]


class DnsRecorder(UDns):
    """Records every result and flags one that runs inside a library call."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.in_call = False
        self.violations: list[str] = []
        self.raise_in_callback = False

    def DnsGetHostByNameResult(self, addr: str | None, isIPv6: bool) -> None:
        if self.in_call:
            self.violations.append(f"DnsGetHostByNameResult({addr!r}) inside GetHostByName")
        self.results.append((addr, isIPv6))
        if self.raise_in_callback:
            raise RuntimeError(f"app failed on {addr!r}")


def lookup(
    mux: Mux, host: str, *, all: bool = False, timeout: int = 5000, log: IInstanceLog | None = None
) -> DnsRecorder:
    """Run one GetHostByName to completion (the end marker, or the single result)."""
    rec = DnsRecorder()
    dns = IDns.Create(mux)
    rec.in_call = True
    dns.GetHostByName(host, rec, log or IInstanceLog(LOG_DNS), timeout, all)
    rec.in_call = False
    assert rec.results == []
    if all:
        mux.run_until(lambda: bool(rec.results) and rec.results[-1][0] is None, what="end marker")
    else:
        mux.run_until(lambda: bool(rec.results), what="the result")
    mux.run_for(0.01)  # nothing more may follow
    assert rec.violations == []
    return rec


class FakeResolver:
    """Stands in for getaddrinfo: answers with `answer` (addrinfo tuples, an exception to
    raise, or None: never answer) and records each host asked."""

    def __init__(self) -> None:
        self.answer: list[tuple[Any, ...]] | BaseException | None = None
        self.asked: list[str] = []

    async def getaddrinfo(
        self, loop: asyncio.AbstractEventLoop, host: str
    ) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        answer = self.answer
        if answer is None:
            await loop.create_future()  # never completes
            raise AssertionError("unreachable")
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    """A fake in place of the loop's getaddrinfo (no lookup at all)."""
    fake = FakeResolver()
    monkeypatch.setattr(_dns, "_getaddrinfo", fake.getaddrinfo)
    return fake


def info(addr: str) -> tuple[Any, ...]:
    if ":" in addr:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, 0, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, 0))


# -- real lookups: /etc/hosts, literals, a reserved name ------------------------------------


def test_localhost_gives_one_loopback_address(mux: Mux) -> None:
    rec = lookup(mux, "localhost")
    assert len(rec.results) == 1
    addr, v6 = rec.results[0]
    assert addr is not None
    ip = ipaddress.ip_address(addr)
    assert ip.is_loopback
    assert v6 == (ip.version == 6)


def test_localhost_all_gives_each_address_then_the_end_marker(mux: Mux) -> None:
    rec = lookup(mux, "localhost", all=True)
    *found, end = rec.results
    assert end == (None, False)
    assert found, "localhost resolves to at least one address"
    assert len(set(found)) == len(found)
    for addr, v6 in found:
        assert addr is not None
        ip = ipaddress.ip_address(addr)
        assert ip.is_loopback and v6 == (ip.version == 6)


@pytest.mark.parametrize(
    ("host", "expect"),
    [
        ("127.0.0.1", ("127.0.0.1", False)),
        ("::1", ("::1", True)),
        ("0:0:0:0:0:0:0:1", ("::1", True)),  # given in its normal form
        ("127.0.0.2", ("127.0.0.2", False)),
    ],
)
@pytest.mark.parametrize("all", [False, True])
def test_ip_literal_answers_at_once(mux: Mux, host: str, expect: Result, all: bool) -> None:
    rec = lookup(mux, host, all=all)
    assert rec.results == ([expect, (None, False)] if all else [expect])


@pytest.mark.parametrize("all", [False, True])
def test_a_name_that_cannot_resolve_gives_none(
    mux: Mux, all: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # RFC 2606 reserves .invalid: no such name exists anywhere
    with caplog.at_level("INFO", logger="usocket_asyncio"):
        rec = lookup(mux, "no-such-host.invalid", all=all)
    assert rec.results == [(None, False)]
    assert "GetHostByName(no-such-host.invalid) failed" in caplog.text


def test_nothing_logged_without_log_dns(mux: Mux, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="usocket_asyncio"):
        rec = lookup(mux, "no-such-host.invalid", log=IInstanceLog(0))
    assert rec.results == [(None, False)]
    assert "GetHostByName" not in caplog.text


def test_many_lookups_at_once_each_answer_once(mux: Mux) -> None:
    dns = IDns.Create(mux)
    log = IInstanceLog()
    recs = {host: DnsRecorder() for host in ("localhost", "127.0.0.1", "::1", "x.invalid")}
    for host, rec in recs.items():
        dns.GetHostByName(host, rec, log)
    mux.run_until(lambda: all(r.results for r in recs.values()))
    mux.run_for(0.01)
    assert [len(r.results) for r in recs.values()] == [1, 1, 1, 1]
    assert recs["127.0.0.1"].results == [("127.0.0.1", False)]
    assert recs["::1"].results == [("::1", True)]
    assert recs["x.invalid"].results == [(None, False)]


# -- callbacks: never inside the call, exceptions to the handler ----------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "x.invalid"])
def test_callback_exceptions_go_to_the_exception_handler(mux: Mux, host: str) -> None:
    rec = DnsRecorder()
    rec.raise_in_callback = True
    IDns.Create(mux).GetHostByName(host, rec, IInstanceLog(), all=True)
    mux.run_until(lambda: bool(rec.results) and rec.results[-1][0] is None)
    mux.run_for(0.01)
    errors = mux.take_errors()
    # every call ran although the one before raised, and each exception was reported
    assert len(errors) == len(rec.results)
    assert all(isinstance(e.get("exception"), RuntimeError) for e in errors)


# -- a fake getaddrinfo: timeout, order, distinct addresses ---------------------------------


@pytest.mark.pure_only
@pytest.mark.parametrize("all", [False, True])
def test_timeout_abandons_the_lookup_and_gives_none(
    mux: Mux, resolver: FakeResolver, all: bool, caplog: pytest.LogCaptureFixture
) -> None:
    resolver.answer = None  # never answers
    with caplog.at_level("INFO", logger="usocket_asyncio"):
        rec = lookup(mux, "slow.example", all=all, timeout=30)
    assert rec.results == [(None, False)]
    assert resolver.asked == ["slow.example"]
    assert "GetHostByName(slow.example): no answer within 30 ms" in caplog.text


@pytest.mark.pure_only
def test_all_keeps_getaddrinfo_order_without_duplicates(mux: Mux, resolver: FakeResolver) -> None:
    resolver.answer = [
        info("::1"),
        info("127.0.0.1"),
        info("::1"),
        (socket.AF_UNIX, socket.SOCK_STREAM, 0, "", "/x"),  # not an IP: left out
        info("127.0.0.3"),
        info("127.0.0.1"),
    ]
    rec = lookup(mux, "multi.example", all=True)
    assert rec.results == [
        ("::1", True),
        ("127.0.0.1", False),
        ("127.0.0.3", False),
        (None, False),
    ]
    first = lookup(mux, "multi.example")
    assert first.results == [("::1", True)]


@pytest.mark.pure_only
@pytest.mark.parametrize(
    "error",
    [
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        UnicodeError("label empty or too long"),
        ValueError("embedded null character"),
    ],
)
def test_lookup_errors_give_none(mux: Mux, resolver: FakeResolver, error: Exception) -> None:
    resolver.answer = error
    assert lookup(mux, "broken.example").results == [(None, False)]
    assert lookup(mux, "broken.example", all=True).results == [(None, False)]


@pytest.mark.pure_only
def test_an_ip_literal_is_not_looked_up(mux: Mux, resolver: FakeResolver) -> None:
    resolver.answer = [info("127.0.0.9")]
    assert lookup(mux, "127.0.0.1").results == [("127.0.0.1", False)]
    assert lookup(mux, "::1", all=True).results == [("::1", True), (None, False)]
    assert resolver.asked == []


@pytest.mark.pure_only
@pytest.mark.parametrize("kind", LOOPS)
def test_a_lookup_pending_when_the_loop_closes_ends_silently(
    kind: str, resolver: FakeResolver
) -> None:
    resolver.answer = None  # never answers
    mux = IIoMux.Create(uvloop=kind == "uvloop")
    errors: list[dict[str, Any]] = []
    mux.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
    rec = DnsRecorder()
    IDns.Create(mux).GetHostByName("pending.example", rec, IInstanceLog(LOG_DNS), 60000)
    mux.loop.run_until_complete(asyncio.sleep(0.01))
    assert resolver.asked == ["pending.example"]
    mux.Close()
    del mux
    gc.collect()
    assert rec.results == []
    assert errors == []


# -- IIoMux.Close(): pending lookups end without a callback -----------------------------------


def _closing_mux(kind: str) -> tuple[IIoMux, list[dict[str, Any]]]:
    mux = IIoMux.Create(uvloop=kind == "uvloop")
    errors: list[dict[str, Any]] = []
    mux.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
    return mux, errors


class ClosingRecorder(DnsRecorder):
    """Records results and flags one that runs inside `IIoMux.Close()`."""

    def __init__(self) -> None:
        super().__init__()
        self.in_close = False

    def DnsGetHostByNameResult(self, addr: str | None, isIPv6: bool) -> None:
        if self.in_close:
            self.violations.append(f"DnsGetHostByNameResult({addr!r}) inside Close()")
        super().DnsGetHostByNameResult(addr, isIPv6)


@pytest.mark.parametrize("kind", LOOPS)
@pytest.mark.parametrize("all", [False, True])
def test_close_ends_an_ip_literal_lookup_without_a_callback(kind: str, all: bool) -> None:
    """The answer of a literal is due on the next loop iteration: Close() runs the loop
    (to finish the sockets' closes) and must not deliver it."""
    mux, errors = _closing_mux(kind)
    rec = ClosingRecorder()
    IDns.Create(mux).GetHostByName("127.0.0.1", rec, IInstanceLog(LOG_DNS), all=all)
    rec.in_close = True
    mux.Close()
    rec.in_close = False
    assert rec.violations == [] and rec.results == []
    assert errors == []


@pytest.mark.pure_only
@pytest.mark.parametrize("kind", LOOPS)
@pytest.mark.parametrize("all", [False, True])
def test_close_ends_an_answered_lookup_without_a_callback(
    kind: str, all: bool, resolver: FakeResolver
) -> None:
    """getaddrinfo has the answer ready but the lookup's task has not run yet."""
    resolver.answer = [info("127.0.0.7")]
    mux, errors = _closing_mux(kind)
    rec = ClosingRecorder()
    IDns.Create(mux).GetHostByName("ready.example", rec, IInstanceLog(LOG_DNS), all=all)
    rec.in_close = True
    mux.Close()
    rec.in_close = False
    assert rec.violations == [] and rec.results == []
    assert errors == []


@pytest.mark.parametrize("kind", LOOPS)
def test_close_in_a_result_callback_stops_the_results(kind: str) -> None:
    """all=True: the app closes the mux in the first result; the end marker and the
    other addresses never come."""
    mux, errors = _closing_mux(kind)

    class CloseAtFirst(DnsRecorder):
        def DnsGetHostByNameResult(self, addr: str | None, isIPv6: bool) -> None:
            super().DnsGetHostByNameResult(addr, isIPv6)
            mux.Terminate()
            mux.Close()

    rec = CloseAtFirst()
    IDns.Create(mux).GetHostByName("::1", rec, IInstanceLog(LOG_DNS), all=True)
    mux.Run()
    mux.Close()
    assert rec.results == [("::1", True)]
    assert errors == []


@pytest.mark.parametrize("kind", LOOPS)
def test_close_of_a_from_loop_mux_ends_its_lookups(kind: str) -> None:
    """A FromLoop() mux: its loop goes on running after Close(), its lookups end."""
    loop = IIoMux.Create(uvloop=kind == "uvloop").loop
    try:
        mux = IIoMux.FromLoop(loop)
        rec = DnsRecorder()
        IDns.Create(mux).GetHostByName("127.0.0.1", rec, IInstanceLog(LOG_DNS), all=True)
        mux.Close()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert rec.results == []
        assert not loop.is_closed()
    finally:
        loop.close()


@pytest.mark.pure_only
@pytest.mark.parametrize("kind", LOOPS)
def test_close_after_the_app_closed_its_loop_is_quiet(kind: str, resolver: FakeResolver) -> None:
    """A FromLoop() mux whose loop the app closed with a lookup pending: Close() neither
    raises nor calls back (the lookup ended with the loop)."""
    resolver.answer = None  # never answers
    loop = IIoMux.Create(uvloop=kind == "uvloop").loop
    mux = IIoMux.FromLoop(loop)
    rec = DnsRecorder()
    IDns.Create(mux).GetHostByName("pending.example", rec, IInstanceLog(LOG_DNS), 60000)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert resolver.asked == ["pending.example"]
    loop.close()
    mux.Close()
    gc.collect()
    assert rec.results == []


@pytest.mark.parametrize("kind", LOOPS)
@pytest.mark.parametrize("from_loop", [False, True], ids=["create", "from_loop"])
def test_get_host_by_name_after_close_says_what_to_do(kind: str, from_loop: bool) -> None:
    made = IIoMux.Create(uvloop=kind == "uvloop")
    mux = IIoMux.FromLoop(made.loop) if from_loop else made
    dns = IDns.Create(mux)
    mux.Close()
    rec = DnsRecorder()
    try:
        with pytest.raises(SocketModeError, match=r"after IIoMux\.Close\(\).*new mux"):
            dns.GetHostByName("localhost", rec, IInstanceLog(LOG_DNS))
        with pytest.raises(SocketModeError, match=r"after IIoMux\.Close\(\)"):
            dns.GetHostByName("127.0.0.1", rec, IInstanceLog(LOG_DNS))
        gc.collect()  # a coroutine made and never awaited would warn here (an error)
        if from_loop:
            made.loop.run_until_complete(asyncio.sleep(0.01))
        assert rec.results == []
    finally:
        made.Close()


# -- the caller's mistakes ------------------------------------------------------------------


def test_bad_arguments_raise_at_once(mux: Mux) -> None:
    dns = IDns.Create(mux)
    rec, log = DnsRecorder(), IInstanceLog()
    with pytest.raises(TypeError, match="host name as a str"):
        dns.GetHostByName(b"localhost", rec, log)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="UDns"):
        dns.GetHostByName("localhost", None, log)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="IInstanceLog"):
        dns.GetHostByName("localhost", rec, None)  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="milliseconds"):
            dns.GetHostByName("localhost", rec, log, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="IIoMux"):
        IDns.Create(mux.loop)  # type: ignore[arg-type]
    mux.run_for(0.01)
    assert rec.results == []
