"""The one failure translator (`_errors`): each case with a real exception, made by a real
failing call where the loopback allows it, its reason in each phase and what its detail
names; and, end to end on both loops, a name whose every address refuses."""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from kit.loop import Mux, R, Recorder
from kit.streams import captured_log, expect_end
from OpenSSL import SSL

from usocket_asyncio import (
    LOG_TCP,
    LOG_TLS,
    CreateTCPSocketProvider,
    CreateTLSSocketProvider,
)
from usocket_asyncio._address import parse_address
from usocket_asyncio._errors import (
    ACCEPT,
    BIND,
    CONNECT,
    HANDSHAKE,
    LISTEN,
    LOST,
    OPEN,
    ConnectErrors,
    detail,
    reason_of,
    translate,
)
from usocket_asyncio._stream import connect_any

# --------------------------------------------------------------------------- real failures


@pytest.fixture
def closed_ports() -> Iterator[list[tuple[str, int]]]:
    """Two loopback addresses whose ports are bound and not listening: a connect is refused."""
    holders = []
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            s = socket.socket()
            s.bind((host, 0))
            holders.append(s)
        yield [s.getsockname() for s in holders]
    finally:
        for s in holders:
            s.close()


def refused(mux: Mux, addr: tuple[str, int]) -> OSError:
    """The loop's own connect failure for a closed port (asyncio's or uvloop's)."""
    s = socket.socket()
    s.setblocking(False)
    try:
        mux.loop.run_until_complete(mux.loop.sock_connect(s, addr))
    except OSError as e:
        return e
    finally:
        s.close()
    raise AssertionError("the connect was not refused")


def address_in_use() -> OSError:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        try:
            b.bind(a.getsockname())
        except OSError as e:
            return e
    raise AssertionError("the second bind succeeded")


def address_not_available() -> OSError:
    with socket.socket() as s:
        try:
            s.bind(("192.0.2.1", 0))  # TEST-NET-1: no interface of ours has it
        except OSError as e:
            return e
    raise AssertionError("bound to an address that is not ours")


def access_denied() -> OSError:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("255.255.255.255", 9))  # broadcast without SO_BROADCAST: nothing sent
        except OSError as e:
            return e
    raise AssertionError("connected to the broadcast address")


def unresolvable() -> socket.gaierror:
    try:
        socket.getaddrinfo("no-such-host", 80, flags=socket.AI_NUMERICHOST)  # asks no DNS
    except socket.gaierror as e:
        return e
    raise AssertionError("resolved")


def local_connect(path: str) -> OSError:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError as e:
            return e
    raise AssertionError(f"connected to {path}")


def pyopenssl_error() -> SSL.Error:
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(b"NO-SUCH-CIPHER")
    except SSL.Error as e:
        return e
    raise AssertionError("OpenSSL took the cipher list")


def pump(a: ssl.SSLObject, a_out: ssl.MemoryBIO, b_in: ssl.MemoryBIO) -> None:
    data = a_out.read()
    if data:
        b_in.write(data)


class Pair:
    """A TLS client and server over memory BIOs: a real handshake, no socket at all."""

    def __init__(self, client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.client = client_ctx.wrap_bio(self.c_in, self.c_out, server_hostname="localhost")
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)

    def handshake(self) -> tuple[BaseException | None, BaseException | None]:
        """Run both sides until each is done or failed: (client error, server error)."""
        errs: dict[str, BaseException | None] = {"c": None, "s": None}
        done = {"c": False, "s": False}
        for _ in range(20):
            for side, obj in (("c", self.client), ("s", self.server)):
                if done[side] or errs[side] is not None:
                    continue
                try:
                    obj.do_handshake()
                    done[side] = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except ssl.SSLError as e:
                    errs[side] = e
            pump(self.client, self.c_out, self.s_in)
            pump(self.server, self.s_out, self.c_in)
        return errs["c"], errs["s"]


def server_ctx(ca: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ctx


# --------------------------------------------------------------------------- OSError


def test_refused_connect_is_rejected_with_its_errno(mux: Mux, closed_ports: Any) -> None:
    e = refused(mux, closed_ports[0])
    assert e.errno == errno.ECONNREFUSED
    reason, why = translate(e, CONNECT)
    assert reason is R.SOCKET_CONNECT_REJECTED
    assert "ECONNREFUSED" in why and "Connection refused" in why
    assert str(closed_ports[0][1]) in why, "the loop's words (the address) are kept"
    assert reason_of(e, LOST) is R.SOCKET_LOST


def test_every_address_refused_is_rejected_by_the_parts(mux: Mux, closed_ports: Any) -> None:
    parts = [refused(mux, a) for a in closed_ports]
    e = ConnectErrors("two.test", list(zip(closed_ports, parts, strict=True)))
    assert e.errors == parts and e.errno == errno.ECONNREFUSED
    reason, why = translate(e, CONNECT)
    assert reason is R.SOCKET_CONNECT_REJECTED
    assert "two.test" in why and all(f"{h}:{p}" in why for h, p in closed_ports)


def test_mixed_parts_one_refused_is_rejected(mux: Mux, closed_ports: Any) -> None:
    parts = [(("255.255.255.255", 9), access_denied())]
    parts.append((closed_ports[0], refused(mux, closed_ports[0])))
    e = ConnectErrors("mixed.test", parts)
    assert e.errno is None
    assert reason_of(e, CONNECT) is R.SOCKET_CONNECT_REJECTED
    assert "EACCES" in detail(e) and "ECONNREFUSED" in detail(e)


def test_parts_none_refused_is_connect_failed() -> None:
    e = ConnectErrors("x.test", [("a", access_denied()), ("b", address_not_available())])
    assert e.errno is None and reason_of(e, CONNECT) is R.SOCKET_CONNECT_FAILED
    assert reason_of(ConnectErrors("none.test", []), CONNECT) is R.SOCKET_CONNECT_FAILED
    assert "no address" in detail(ConnectErrors("none.test", []))


def test_address_in_use() -> None:
    e = address_in_use()
    reason, why = translate(e, BIND)
    assert reason is R.SOCKET_ADDR_IN_USE
    assert "EADDRINUSE" in why and "Address already in use" in why
    assert reason_of(e, CONNECT) is R.SOCKET_CONNECT_FAILED, "in use means a bind failure only"


@pytest.mark.parametrize(
    ("make", "name"),
    [(address_not_available, "EADDRNOTAVAIL"), (access_denied, "EACCES")],
)
def test_other_bind_and_connect_errors(make: Any, name: str) -> None:
    e = make()
    assert errno.errorcode[e.errno] == name
    assert translate(e, BIND) == (R.SOCKET_BIND_FAILED, detail(e))
    assert reason_of(e, CONNECT) is R.SOCKET_CONNECT_FAILED
    assert name in detail(e) and os.strerror(e.errno) in detail(e)


@pytest.mark.parametrize("code", [errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT])
def test_unreachable_and_timeout_are_connect_failed(code: int) -> None:
    # no loopback call fails so (test_tcp provokes ENETUNREACH in a network namespace):
    # the kernel's exception as the loops build it, OSError(errno, text)
    e = OSError(code, "Connect call failed ('192.0.2.1', 9)")
    assert reason_of(e, CONNECT) is R.SOCKET_CONNECT_FAILED
    assert errno.errorcode[code] in detail(e) and os.strerror(code) in detail(e)
    assert "192.0.2.1" in detail(e)


def test_unresolvable_name() -> None:
    e = unresolvable()
    assert reason_of(e, CONNECT) is R.SOCKET_CONNECT_FAILED
    assert reason_of(e, BIND) is R.SOCKET_BIND_FAILED
    why = detail(e)
    assert "cannot resolve" in why and "gaierror EAI_NONAME" in why and str(e.strerror) in why


def test_local_paths(short_tmp: str) -> None:
    missing = local_connect(os.path.join(short_tmp, "nobody"))
    assert missing.errno == errno.ENOENT
    assert reason_of(missing, CONNECT) is R.SOCKET_CONNECT_REJECTED, "no file: nobody listens"
    assert "ENOENT" in detail(missing) and "No such file" in detail(missing)
    with open(os.path.join(short_tmp, "file"), "w"):
        pass
    through = local_connect(os.path.join(short_tmp, "file", "below"))
    assert through.errno == errno.ENOTDIR
    assert reason_of(through, CONNECT) is R.SOCKET_CONNECT_FAILED


def test_the_other_phases_keep_their_reason() -> None:
    e = address_in_use()
    assert reason_of(e, OPEN) is R.SOCKET_OPEN_FAILED
    assert reason_of(e, LISTEN) is R.SOCKET_LISTEN_FAILED
    assert reason_of(e, ACCEPT) is R.SOCKET_ACCEPT_FAILED
    assert reason_of(e, HANDSHAKE) is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert reason_of(e, LOST) is R.SOCKET_LOST


# --------------------------------------------------------------------------- TLS


def test_untrusted_certificate(ca: Any) -> None:
    client = ssl.create_default_context()  # the system store: the test CA is unknown
    err_c, err_s = Pair(client, server_ctx(ca)).handshake()
    assert isinstance(err_c, ssl.SSLCertVerificationError)
    reason, why = translate(err_c, HANDSHAKE)
    assert reason is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert reason_of(err_c, CONNECT) is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert "certificate verification failed" in why and err_c.verify_message in why
    # the server hears the client's alert
    assert isinstance(err_s, ssl.SSLError) and err_s.reason == "TLSV1_ALERT_UNKNOWN_CA"
    reason, why = translate(err_s, ACCEPT)
    assert reason is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert why == f"{err_s.library}: TLSV1_ALERT_UNKNOWN_CA"


def test_certificate_alert_after_the_handshake(ca: Any) -> None:
    # TLS 1.3: the client's handshake is done before the server rejects it for having no
    # certificate; the client learns it on its first read
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    server = server_ctx(ca)
    server.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server)
    pair = Pair(client, server)
    err_c, err_s = pair.handshake()
    assert err_c is None and isinstance(err_s, ssl.SSLError)
    with pytest.raises(ssl.SSLError) as info:
        pair.client.read(10)
    exc = info.value
    assert exc.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert translate(exc, LOST) == (
        R.SOCKET_TLS_HANDSHAKE_FAILED,
        f"{exc.library}: TLSV13_ALERT_CERTIFICATE_REQUIRED",
    )


def test_broken_record_after_the_handshake_is_lost(ca: Any) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    pair = Pair(client, server_ctx(ca))
    assert pair.handshake() == (None, None)
    pair.c_in.write(bytes([23, 3, 3, 0, 32]) + bytes(32))  # application data that is no record
    with pytest.raises(ssl.SSLError) as info:
        pair.client.read(10)
    exc = info.value
    reason, why = translate(exc, LOST)
    assert reason is R.SOCKET_LOST
    assert exc.reason and exc.reason in why


def test_pyopenssl_error() -> None:
    e = pyopenssl_error()
    assert isinstance(e.args[0], list) and e.args[0]
    reason, why = translate(e, HANDSHAKE)
    assert reason is R.SOCKET_TLS_HANDSHAKE_FAILED
    assert reason_of(e, LOST) is R.SOCKET_LOST
    lib, _, what = e.args[0][0]
    assert f"{lib}: {what}" in why and "no cipher match" in why


# --------------------------------------------------------------------------- the rest


def test_other_exceptions_get_their_phase_reason_and_their_words() -> None:
    assert translate(ValueError("odd"), CONNECT) == (R.SOCKET_CONNECT_FAILED, "ValueError: odd")
    assert translate(ConnectionResetError(), HANDSHAKE) == (
        R.SOCKET_TLS_HANDSHAKE_FAILED,
        "ConnectionResetError()",
    )


# --------------------------------------------------------------------------- end to end


def two_closed_addresses(mux: Mux, closed_ports: Any) -> None:
    """Make the loop resolve any name to both closed ports (asyncio's and uvloop's own
    `create_connection` would fold the two refusals into one OSError with no errno)."""

    async def getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in closed_ports]

    setattr(mux.loop, "getaddrinfo", getaddrinfo)  # noqa: B010 (a method, replaced)


def test_connect_any_keeps_every_part(mux: Mux, closed_ports: Any) -> None:
    two_closed_addresses(mux, closed_ports)
    target = parse_address(f"two.test:{closed_ports[0][1]}", need_port=True)
    with pytest.raises(ConnectErrors) as info:
        mux.loop.run_until_complete(connect_any(mux.loop, target, False))
    assert [p.errno for p in info.value.errors] == [errno.ECONNREFUSED] * 2


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_name_whose_every_address_refuses(mux: Mux, closed_ports: Any, kind: str) -> None:
    two_closed_addresses(mux, closed_ports)
    flag = LOG_TCP if kind == "tcp" else LOG_TLS
    log, lines = captured_log(flag)
    provider = CreateTCPSocketProvider() if kind == "tcp" else CreateTLSSocketProvider(None)

    def make(rec: Recorder) -> Any:
        return provider.CreateSocket(mux, rec, log)

    expect_end(
        mux, make, lambda s: s.Connect(f"two.test:{closed_ports[0][1]}"), R.SOCKET_CONNECT_REJECTED
    )
    text = lines.text()
    assert "Connect failed" in text and "every address failed" in text
    assert all(a[0] in text for a in closed_ports)
