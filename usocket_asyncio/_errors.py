"""Failures: an exception to the contract's `ShutdownReason` and the detail to log.

Every socket kind asks `translate(exc, phase)` what a failure means; every detail that
goes to the log, for an `OSError`, an `ssl.SSLError` or a pyOpenSSL `SSL.Error`, is
written by `detail(exc)`. Both decide by the exception's type, its errno and OpenSSL's
reason code, never by the words of its message.

The phase is what the socket was doing: the same errno means one thing in `BIND`
(EADDRINUSE: `SOCKET_ADDR_IN_USE`) and nothing special in `CONNECT`. A connect to a
name tries each of its addresses; when all fail, the stream sockets raise one
`ConnectErrors` that keeps every part (asyncio's and uvloop's `create_connection` fold
such parts into one `OSError` with no errno, "Multiple exceptions: ...", which is why
they do not use it for names with several addresses).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from typing import Any, Final

from OpenSSL import SSL

from ._base import mypyc_attr
from ._types import ShutdownReason

CONNECT: Final = 0
"""Opening a connection: resolving, connecting (a TLS client before its TCP is up)."""
BIND: Final = 1
"""Resolving the local address and binding to it."""
OPEN: Final = 2
"""Making the socket (`socket()`)."""
LISTEN: Final = 3
"""`listen()` on a bound socket."""
ACCEPT: Final = 4
"""Taking a connection a listener was offered."""
HANDSHAKE: Final = 5
"""A TLS or DTLS handshake, once the connection underneath exists."""
LOST: Final = 6
"""An established connection broke."""

_R = ShutdownReason
_PHASE_REASON: Final = (
    _R.SOCKET_CONNECT_FAILED,
    _R.SOCKET_BIND_FAILED,
    _R.SOCKET_OPEN_FAILED,
    _R.SOCKET_LISTEN_FAILED,
    _R.SOCKET_ACCEPT_FAILED,
    _R.SOCKET_TLS_HANDSHAKE_FAILED,
    _R.SOCKET_LOST,
)
"""Each phase's reason for a failure that has no more particular one."""

_REFUSED: Final = frozenset({errno.ECONNREFUSED, errno.ENOENT})
"""Connect errnos that mean nobody takes the connection: a closed port, or (local
sockets) no socket file at the path, the local form of a closed port."""

CERTIFICATE_ALERTS: Final = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_NO_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_BAD_CERTIFICATE_HASH_VALUE",
        "TLSV1_ALERT_BAD_CERTIFICATE_STATUS_RESPONSE",
        "TLSV1_ALERT_CERTIFICATE_UNOBTAINABLE",
    }
)
"""OpenSSL's reason codes of the alerts about our certificate. One after the handshake
is a TLS 1.3 server rejecting our client certificate (it decides after its last
flight): the handshake failed, the connection was not lost."""

_EAI_NAMES: Final = {
    int(getattr(socket, name)): name for name in dir(socket) if name.startswith("EAI_")
}


@mypyc_attr(native_class=False)  # compiled classes cannot derive from OSError
class ConnectErrors(OSError):
    """Every address of a name failed to connect. `tried` holds each address (a
    sockaddr) with its failure, in the order tried, `errors` the failures alone. Its
    errno is theirs when they all share one, else None."""

    def __init__(self, host: str, tried: list[tuple[Any, OSError]]) -> None:
        errors = [e for _, e in tried]
        codes = {e.errno for e in errors}
        code = codes.pop() if len(codes) == 1 else None
        super().__init__(code, f"{host}: every address failed: {_joined(tried)}")
        self.tried = tried
        self.errors = errors


def translate(exc: BaseException, phase: int) -> tuple[ShutdownReason, str]:
    """The contract's reason for `exc`, met in `phase` (`CONNECT`, `BIND`, ...), and its
    detail for the log."""
    return reason_of(exc, phase), detail(exc)


def reason_of(exc: BaseException, phase: int) -> ShutdownReason:
    """The contract's reason for `exc`, met in `phase` (see `translate`)."""
    if isinstance(exc, ssl.SSLError | SSL.Error):
        if phase == LOST:
            if isinstance(exc, ssl.SSLError) and exc.reason in CERTIFICATE_ALERTS:
                return _R.SOCKET_TLS_HANDSHAKE_FAILED
            return _R.SOCKET_LOST
        if phase in (CONNECT, ACCEPT, HANDSHAKE):
            return _R.SOCKET_TLS_HANDSHAKE_FAILED
    elif phase == CONNECT and isinstance(exc, OSError) and not isinstance(exc, socket.gaierror):
        parts = exc.errors if isinstance(exc, ConnectErrors) else [exc]
        if any(p.errno in _REFUSED for p in parts):
            return _R.SOCKET_CONNECT_REJECTED
    elif phase == BIND and isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return _R.SOCKET_ADDR_IN_USE
    return _PHASE_REASON[phase]


def detail(exc: BaseException) -> str:
    """What `exc` says about the failure, for the log: the errno's name and text (and
    the call's own words, when it has some), OpenSSL's library and reason, the
    certificate check's verdict."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message} ({exc.reason})"
    if isinstance(exc, ssl.SSLError):
        if exc.reason:
            lib = f"{exc.library}: " if exc.library else ""
            return f"{lib}{exc.reason}"
        return _plain(exc)
    if isinstance(exc, SSL.Error):
        return _openssl_detail(exc)
    if isinstance(exc, ConnectErrors):
        return str(exc.strerror)
    if isinstance(exc, socket.gaierror):
        code = exc.errno
        name = _EAI_NAMES.get(code, str(code)) if isinstance(code, int) else "?"
        return f"cannot resolve (gaierror {name}): {exc.strerror}"
    if isinstance(exc, OSError) and isinstance(exc.errno, int):
        code = exc.errno
        name = errno.errorcode.get(code, str(code))
        text = os.strerror(code)
        said = exc.strerror
        out = f"{name} ({text})"
        if said and said != text:
            out += f": {said}"
        if exc.filename is not None:
            out += f": {exc.filename!r}"
        return out
    return _plain(exc)


def _openssl_detail(exc: SSL.Error) -> str:
    """pyOpenSSL's error queue (`args[0]`: (library, function, reason) tuples)."""
    queue = exc.args[0] if exc.args else None
    if isinstance(queue, list):
        parts = []
        for entry in queue:
            if isinstance(entry, tuple) and len(entry) == 3:
                lib, _, why = entry
                parts.append(f"{lib}: {why}" if lib else str(why))
        if parts:
            return "; ".join(parts)
    return _plain(exc)


def _plain(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else repr(exc)


def _joined(tried: list[tuple[Any, OSError]]) -> str:
    if not tried:
        return "no address"
    return "; ".join(f"{_where(addr)}: {detail(e)}" for addr, e in tried)


def _where(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)
