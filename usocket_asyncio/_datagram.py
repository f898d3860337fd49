"""The datagram layer shared by UDP and DTLS sockets: one message per `Recv`.

Theory of operation
-------------------
A UDP socket receives datagrams, a DTLS socket records; both give one message per
`Recv` and neither can pause its source (a datagram transport has no flow control).
`RecvQueue` is what they share:

- the pending `Recv` buffers, in order, each with the writable contiguous view it fills
  (`recv_view` checks the buffer: contiguous, writable, `len` within it; a caller's
  mistake raises at once);
- `fill(message)`: copy a message into the oldest pending buffer (a longer message is
  truncated to it, and the truncation logged) and release the view before the caller's
  callback runs, so the app may resize its buffer inside that callback;
- the hold: messages that found no pending `Recv`, bounded by `max_items` messages and
  `max_bytes` bytes; beyond that the newest is dropped, counted (`dropped`) and logged
  (the first drop of a run and every `DROP_LOG_EVERY`-th), and a line tells when the
  queue drained again;
- `cancel()` for `RecvCancel` and `clear()` for the end.

Opening. UDP and DTLS sockets open their OS socket the same way (the library makes it,
so that `SOCKET_OPEN_FAILED`, `SOCKET_ADDR_IN_USE`, `SOCKET_BIND_FAILED` and
`SOCKET_CONNECT_FAILED` stay apart): `open_bound` for `Bind` and `open_connected` for
`Connect` give the socket or the `OpenError` with the contract's reason and what to log;
`copies_needed` tells whether a transport keeps the caller's buffer.

Making the transport. `loop.create_datagram_endpoint(sock=...)` makes the transport at
once, schedules the protocol's `connection_made` and then waits for it. Two ways out of
that wait leak on uvloop unless the owner takes care (asyncio is clean either way):

- a transport closed *inside* `connection_made` is never freed: uvloop starts reading
  after `connection_made` returns, on the closed transport, and keeps a reference for
  that reading that nothing releases;
- when the wait is cancelled (the socket deleted while it opens), uvloop neither closes
  the transport it made nor stops its `connection_made`; asyncio closes it itself.

So the rule for both kinds: `connection_made` only records the transport, and no app
callback runs inside it (the socket goes on once the wait has returned, in its opening
task); a transport that arrives for a socket already ended is dropped by `drop_transport`,
right after `connection_made`; the owner of a cancelled opening closes the transport
if it already came, else drops it when it comes. Each way out closes the transport, and
with it the socket (on uvloop the transport owns the socket's descriptor from then on).

`Handover` is what a connected UDP socket gives a DTLS socket that takes it over
(`UpgradeToTLSSocket`): its transport, the datagrams it had read and held, its peer,
its local address and the server name given to `Connect`. After the hand-over the UDP
socket has no transport and calls its user back no more; the DTLS socket owns it.

The module keeps no loop and no socket of its own; it is compiled with the UDP socket.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from ._address import Address, AddressError, parse_address
from ._base import as_view
from ._errors import BIND, CONNECT, OPEN, translate
from ._types import ShutdownReason

if TYPE_CHECKING:
    from ._log import IInstanceLog

DROP_LOG_EVERY = 1000
"""While dropping, one log line per this many dropped messages (and the first)."""


def recv_view(buf: Any, len: int | None, call: str) -> memoryview:
    """The view of `buf` a `Recv` fills: its first `len` bytes (all with None).

    Raises:
        TypeError: `buf` is no buffer.
        ValueError: `buf` is read-only or not contiguous, or `len` is not 1..len(buf).
    """
    mv = as_view(buf, call)
    if mv.readonly:
        raise ValueError(
            f"{call}: the buffer is read-only; pass a bytearray or a writable memoryview"
        )
    if not mv.contiguous:
        raise ValueError(
            f"{call}: the buffer is not contiguous (a strided memoryview); pass a "
            "contiguous bytearray or memoryview"
        )
    n = mv.nbytes if len is None else len
    if n <= 0 or n > mv.nbytes:
        raise ValueError(f"{call}: len={len} must be between 1 and the buffer's size ({mv.nbytes})")
    if n != mv.nbytes:
        mv = mv[:n]
    return mv


class RecvQueue:
    """Pending `Recv` buffers and the bounded hold of messages that found none.

    `rq` holds (buffer, view) pairs, `held` (message, address) pairs; the owner reads
    both directly on its fast path and calls the methods for the rest."""

    __slots__ = (
        "drop_run",
        "dropped",
        "flag",
        "held",
        "held_bytes",
        "log",
        "max_bytes",
        "max_items",
        "rq",
        "tag",
        "what",
    )

    def __init__(
        self,
        log: IInstanceLog,
        flag: int,
        kind: str,
        ident: int,
        what: str,
        max_items: int,
        max_bytes: int,
    ) -> None:
        self.rq: deque[tuple[Any, memoryview]] = deque()
        self.held: deque[tuple[bytes, Any]] = deque()
        self.held_bytes = self.dropped = self.drop_run = 0
        self.log = log
        self.flag = flag
        self.tag = f"{kind} {ident:x}"  # what each log line starts with
        self.what = what
        self.max_items, self.max_bytes = max_items, max_bytes

    def add(self, buf: Any, len: int | None, call: str) -> None:
        """Queue a `Recv` buffer (checked by `recv_view`)."""
        self.rq.append((buf, recv_view(buf, len, call)))

    def fill(self, data: bytes) -> tuple[Any, int]:
        """Copy `data` into the oldest pending buffer and release its view: the buffer
        and the number of bytes written. The caller checked that `rq` is not empty."""
        buf, mv = self.rq.popleft()
        n = data.__len__()
        if n <= mv.nbytes:
            mv[:n] = data
        else:
            n = self.truncate(mv, data)
        mv.release()  # the buffer is the app's again: it may resize it in the callback
        return buf, n

    def truncate(self, mv: memoryview, data: bytes) -> int:
        """Fill all of `mv` with the start of the longer `data`, logged; its size."""
        n = mv.nbytes
        mv[:] = memoryview(data)[:n]
        self.log.Log(
            self.flag,
            "%s: %s of %d bytes truncated to the Recv buffer's %d",
            self.tag,
            self.what,
            data.__len__(),
            n,
        )
        return n

    def hold(self, data: bytes, addr: Any) -> bool:
        """Hold a message no `Recv` waits for; False (dropped, counted, logged) when the
        hold is full."""
        size = data.__len__()
        held = self.held
        if held.__len__() >= self.max_items or self.held_bytes + size > self.max_bytes:
            self.dropped += 1
            self.drop_run += 1
            if self.drop_run % DROP_LOG_EVERY == 1 or DROP_LOG_EVERY == 1:
                self.log.Log(
                    self.flag,
                    "%s: no Recv pending, %d bytes in %d %ss held: dropping (%d dropped so far)",
                    self.tag,
                    self.held_bytes,
                    held.__len__(),
                    self.what,
                    self.dropped,
                )
            return False
        held.append((data, addr))
        self.held_bytes += size
        return True

    def pop_held(self) -> tuple[bytes, Any]:
        """The oldest held message and its address (the caller checked there is one)."""
        data, addr = self.held.popleft()
        self.held_bytes -= data.__len__()
        return data, addr

    def drained(self) -> None:
        """The hold is empty again: log how many were dropped meanwhile, if any."""
        if self.drop_run:
            self.log.Log(
                self.flag,
                "%s: receive queue drained; %d %ss were dropped meanwhile",
                self.tag,
                self.drop_run,
                self.what,
            )
            self.drop_run = 0

    def cancel(self) -> list[Any]:
        """Take every pending `Recv` buffer back (views released), oldest first."""
        out: list[Any] = []
        for buf, mv in self.rq:
            mv.release()
            out.append(buf)
        self.rq.clear()
        return out

    def clear(self) -> None:
        """Forget pending buffers and held messages (the socket ends)."""
        for _, mv in self.rq:
            mv.release()
        self.rq.clear()
        self.held.clear()
        self.held_bytes = 0


class OpenError(Exception):
    """Opening a UDP socket failed: the contract's reason and what to log."""

    def __init__(self, reason: ShutdownReason, what: str, detail: object) -> None:
        super().__init__(f"{what}: {detail}")
        self.reason = reason
        self.what = what
        self.detail = detail


def os_failure(what: str, exc: OSError, phase: int) -> OpenError:
    """The `OpenError` of `exc`, met in `phase`: its reason and detail by `translate`."""
    reason, why = translate(exc, phase)
    return OpenError(reason, what, why)


def bound_udp_socket(family: int, sockaddr: Any, reuseAddr: bool) -> socket.socket:
    """A non-blocking UDP socket bound to `sockaddr` ("::" also takes IPv4).

    Raises:
        OpenError: with `SOCKET_OPEN_FAILED`, `SOCKET_ADDR_IN_USE` or `SOCKET_BIND_FAILED`.
    """
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as e:
        raise os_failure("Bind: socket() failed", e, OPEN) from e
    try:
        sock.setblocking(False)
        if reuseAddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and sockaddr[0] in ("::", "::0"):
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        sock.bind(sockaddr)
    except OSError as e:
        sock.close()
        raise os_failure("Bind failed", e, BIND) from e
    return sock


def connected_udp_socket(infos: list[tuple[int, Any]]) -> socket.socket:
    """A non-blocking UDP socket connected to the first of `infos` (family, sockaddr)
    that works.

    Raises:
        OpenError: with `SOCKET_OPEN_FAILED` or `SOCKET_CONNECT_FAILED`.
    """
    last: OpenError | None = None
    for family, sockaddr in infos:
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            last = os_failure("Connect: socket() failed", e, OPEN)
            continue
        try:
            sock.setblocking(False)
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            last = os_failure("Connect failed", e, CONNECT)
            continue
        return sock
    if last is None:
        last = OpenError(ShutdownReason.SOCKET_CONNECT_FAILED, "Connect", "no address to try")
    raise last


async def connect_infos(
    loop: asyncio.AbstractEventLoop, target: Address, use_ipv6: bool
) -> list[tuple[int, Any]]:
    """The (family, sockaddr) candidates for a Connect target (names resolved).

    Raises:
        OpenError: with `SOCKET_CONNECT_FAILED` when a name does not resolve.
    """
    if target.ip is not None:
        fam = socket.AF_INET6 if target.ip.version == 6 else socket.AF_INET
        return [(fam, (target.host, target.port))]
    fam = socket.AF_INET6 if use_ipv6 else socket.AF_INET
    try:
        infos = await loop.getaddrinfo(target.host, target.port, family=fam, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise os_failure("Connect: cannot resolve", e, CONNECT) from e
    return [(info[0], info[4]) for info in infos]


async def bind_target(
    loop: asyncio.AbstractEventLoop, localAddr: str | None, localPort: int, use_ipv6: bool
) -> tuple[int, Any]:
    """The (family, sockaddr) to bind: None is all interfaces ("::" with `use_ipv6`).

    Raises:
        OpenError: `SOCKET_ADDRESS_INVALID` for a string that is no address,
            `SOCKET_BIND_FAILED` for a name that does not resolve.
    """
    if not 0 <= int(localPort) <= 65535:
        raise OpenError(
            ShutdownReason.SOCKET_ADDRESS_INVALID,
            "Bind: address invalid",
            f"port {localPort} out of range",
        )
    if localAddr is None or localAddr == "":
        if use_ipv6:
            return socket.AF_INET6, ("::", localPort)
        return socket.AF_INET, ("0.0.0.0", localPort)
    try:
        addr = parse_address(localAddr, need_port=False, default_port=localPort)
    except AddressError as e:
        raise OpenError(ShutdownReason.SOCKET_ADDRESS_INVALID, "Bind: address invalid", e) from e
    if addr.ip is not None:
        fam = socket.AF_INET6 if addr.ip.version == 6 else socket.AF_INET
        return fam, (addr.host, addr.port)
    fam = socket.AF_INET6 if use_ipv6 else socket.AF_INET
    try:
        infos = await loop.getaddrinfo(addr.host, addr.port, family=fam, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise os_failure("Bind: cannot resolve", e, BIND) from e
    return infos[0][0], infos[0][4]


def drop_transport(tr: Any) -> None:
    """Abort datagram transport `tr`, made for a socket that ended while it was being
    made, from the loop right after its `connection_made` (never inside it: see the
    module docstring). Call it from `connection_made` or later, on the loop."""
    asyncio.get_running_loop().call_soon(tr.abort)


def copies_needed(transport: Any) -> bool:
    """True when `transport.sendto` may keep a reference to the caller's buffer.

    asyncio's datagram transport sends at once or copies what it queues; uvloop's queues
    a reference to the buffer itself, so the caller's (mutable) buffer must be copied.
    """
    return not type(transport).__module__.startswith("asyncio")


def clear_reuse(tr: Any) -> None:
    """libuv (uvloop) turns SO_REUSEADDR on for every UDP socket it opens; without
    `reuseAddr` the port must stay the socket's alone, as on the default loop: turn it
    off on the socket of transport `tr`.

    Raises:
        OSError: the kernel refused.
    """
    sock = tr.get_extra_info("socket") if tr is not None else None
    if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)


async def open_bound(
    loop: asyncio.AbstractEventLoop,
    localAddr: str | None,
    localPort: int,
    reuseAddr: bool,
    use_ipv6: bool,
) -> socket.socket | OpenError:
    """A UDP socket bound as `Bind` asks (see `bind_target`, `bound_udp_socket`), or
    the `OpenError` that says why there is none."""
    try:
        family, sockaddr = await bind_target(loop, localAddr, localPort, use_ipv6)
        return bound_udp_socket(family, sockaddr, reuseAddr)
    except OpenError as e:
        return e


async def open_connected(
    loop: asyncio.AbstractEventLoop, target: Address, use_ipv6: bool
) -> socket.socket | OpenError:
    """A UDP socket connected as `Connect` asks (see `connect_infos`,
    `connected_udp_socket`), or the `OpenError` that says why there is none."""
    try:
        return connected_udp_socket(await connect_infos(loop, target, use_ipv6))
    except OpenError as e:
        return e


class Handover(NamedTuple):
    """What a connected UDP socket hands to the DTLS socket that takes it over."""

    transport: Any
    held: list[bytes]
    peer: Any
    local: tuple[str, int]
    server_name: str | None
