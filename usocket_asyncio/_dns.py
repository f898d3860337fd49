"""IDns / UDns: the SDK's resolver (`common/interface/dns.h`) on `loop.getaddrinfo`.

Each lookup is one task: for a name it awaits the loop's `getaddrinfo` (a thread of the
default executor on asyncio, libuv's resolver on uvloop) under the caller's timeout, so the
loop never blocks; an IP literal is answered on the next loop iteration without a lookup.
Results reach `UDns.DnsGetHostByNameResult` from the loop, never inside `GetHostByName`;
an exception raised there goes to the loop's exception handler.

The end. The mux tracks each lookup's task (`IIoMux._add_job`). `IIoMux.Close()` cancels
those still pending before anything else, so a lookup pending at `Close()` ends silently:
no callback inside `Close()` or after it (also when `Close()` is called from a result
callback: the results left are not delivered), nothing in the exception handler. A lookup
pending when an app closes the loop itself ends the same way. `GetHostByName` after
`Close()` raises `SocketModeError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from ._iomux import IIoMux, call_user
from ._log import IInstanceLog
from ._types import LogFlags

_LOG_DNS = LogFlags.LOG_DNS

_AddrInfo = list[tuple[Any, ...]]


class UDns:
    """The user side of a lookup: override `DnsGetHostByNameResult`."""

    def DnsGetHostByNameResult(self, addr: str | None, isIPv6: bool) -> None:
        """One address found (`isIPv6` says which family), or None.

        With `all=False` it runs once: the first address, or None when nothing was found in
        time. With `all=True` it runs once per distinct address and then once with None,
        which marks the end (the only call when nothing was found).
        """


async def _getaddrinfo(loop: asyncio.AbstractEventLoop, host: str) -> _AddrInfo:
    # SOCK_STREAM: one entry per address instead of one per socket type
    return await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)


class IDns:
    """The resolver of one `IIoMux`. Make one with `IDns.Create(iomux)`."""

    __slots__ = ("_iomux",)

    def __init__(self, iomux: IIoMux) -> None:
        self._iomux = iomux

    @staticmethod
    def Create(iomux: IIoMux) -> IDns:
        """A resolver whose results arrive on `iomux`'s loop."""
        if not isinstance(iomux, IIoMux):
            raise TypeError(f"IDns.Create takes the app's IIoMux, not {type(iomux).__name__}")
        return IDns(iomux)

    def GetHostByName(
        self, host: str, user: UDns, log: IInstanceLog, timeout: int = 5000, all: bool = False
    ) -> None:
        """Look `host` up; the answer comes by `user.DnsGetHostByNameResult(addr, isIPv6)`.

        Args:
            host: a host name, or an IPv4/IPv6 literal (answered without a lookup, in its
                normal form).
            user: receives the results, from the loop, after this call has returned.
            log: failures, timeouts and results are logged under LOG_DNS.
            timeout: milliseconds; a lookup that takes longer is abandoned and counts as
                nothing found.
            all: False: one call with the first address getaddrinfo gives, or None.
                True: one call per distinct address in getaddrinfo's order, then one call
                with None as the end marker.

        Raises:
            TypeError: `host` is not a str, `user` has no `DnsGetHostByNameResult`, or
                `log` is not an `IInstanceLog`.
            ValueError: `timeout` is not a positive number of milliseconds.
            SocketModeError: the mux was closed (`IIoMux.Close()`).
        """
        if not isinstance(host, str):
            raise TypeError(
                f"GetHostByName takes the host name as a str, not {type(host).__name__}"
            )
        if not callable(getattr(user, "DnsGetHostByNameResult", None)):
            raise TypeError(
                "GetHostByName needs a user with DnsGetHostByNameResult(addr, isIPv6): "
                "pass an instance of a UDns subclass"
            )
        if not isinstance(log, IInstanceLog):
            raise TypeError(f"GetHostByName takes an IInstanceLog, not {type(log).__name__}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise ValueError(f"the timeout is a positive number of milliseconds, not {timeout!r}")
        iomux = self._iomux
        iomux._check_open("GetHostByName")
        loop = iomux.loop
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            literal = None
            log.Log(_LOG_DNS, "GetHostByName(%s) timeout=%d all=%d", host, timeout, all)
        else:
            literal = (str(ip), ip.version == 6)
            log.Log(_LOG_DNS, "GetHostByName(%s): an IP literal, no lookup", host)
        task = loop.create_task(_lookup(iomux, host, literal, user, log, timeout, all))
        # A lookup still pending when the app closes its loop is not an error of the app's:
        # asyncio.gather turns this report off for its children in the same way.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        iomux._add_job(task)


async def _lookup(
    iomux: IIoMux,
    host: str,
    literal: tuple[str, bool] | None,
    user: UDns,
    log: IInstanceLog,
    timeout: int,
    all: bool,
) -> None:
    loop = iomux.loop
    if literal is not None:
        _deliver(iomux, user, [literal], all)
        return
    found: list[tuple[str, bool]] = []
    try:
        async with asyncio.timeout(timeout / 1000.0):
            infos = await _getaddrinfo(loop, host)
    except TimeoutError:
        log.Log(_LOG_DNS, "GetHostByName(%s): no answer within %d ms", host, timeout)
    except (OSError, UnicodeError, ValueError) as e:
        # gaierror (not found, no resolver), an IDNA label too long, an embedded NUL
        log.Log(_LOG_DNS, "GetHostByName(%s) failed: %s", host, e)
    else:
        for family, _type, _proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            entry = (str(sockaddr[0]), family == socket.AF_INET6)
            if entry not in found:
                found.append(entry)
        log.Log(_LOG_DNS, "GetHostByName(%s): %s", host, " ".join(a for a, _ in found) or "none")
    _deliver(iomux, user, found, all)


def _deliver(iomux: IIoMux, user: UDns, found: list[tuple[str, bool]], all: bool) -> None:
    """The results, in order; none once the mux is closed (a callback may close it)."""
    loop = iomux.loop
    result = user.DnsGetHostByNameResult
    if not all:
        addr, v6 = found[0] if found else (None, False)
        if not iomux._is_closed():
            call_user(loop, result, addr, v6)
        return
    for addr, v6 in [*found, (None, False)]:
        if iomux._is_closed():
            return
        call_user(loop, result, addr, v6)
