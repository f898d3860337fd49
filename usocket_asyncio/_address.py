"""Address strings: "a.b.c.d:port", "[v6]:port", "host.name:port".

One parser, used by every socket kind; names are resolved by the caller with
`loop.getaddrinfo` so the loop never blocks.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from ._types import IPaddr

# RFC 1123 host names: dot-separated labels of letters, digits and hyphens.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


class AddressError(ValueError):
    """The string is no address; the socket ends with SOCKET_ADDRESS_INVALID."""


class Address(NamedTuple):
    """A parsed address: `ip` is set for literals, `host` always holds the host part."""

    host: str
    port: int
    ip: IPaddr | None


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise AddressError(f"{whole!r}: the port must be a decimal number")
    port = int(text)
    if port > 65535:
        raise AddressError(f"{whole!r}: port {port} is out of range (0..65535)")
    return port


def _check_host(host: str, whole: str) -> IPaddr | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise AddressError(f"{whole!r}: {host!r} is neither an IP address nor a host name")
    if all(label.isdigit() for label in name.split(".")):
        raise AddressError(f"{whole!r}: {host!r} is not a valid IPv4 address")
    return None


def parse_address(text: str, *, need_port: bool = True, default_port: int = 0) -> Address:
    """Parse `text` into host, port and (for literals) an `ipaddress` object.

    Args:
        text: "a.b.c.d:port", "[v6]:port", "host.name:port"; without `need_port` also the
            same without ":port", and a bare IPv6 literal.
        need_port: a missing port is an error (Connect); else `default_port` is used (Bind).
        default_port: the port when none is given and none is needed.

    Raises:
        AddressError: the string is no address (bad syntax, missing or out-of-range port).
    """
    if not isinstance(text, str):
        raise AddressError(f"{text!r}: an address is a string like '127.0.0.1:80'")
    s = text.strip()
    if not s:
        raise AddressError("the address is empty")
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise AddressError(f"{text!r}: missing ']' after the IPv6 address")
        host = s[1:end]
        rest = s[end + 1 :]
        try:
            ip: IPaddr | None = ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"{text!r}: {host!r} inside [] is not an IPv6 address") from None
        if rest == "":
            if need_port:
                raise AddressError(f"{text!r}: no port; write it as '[{host}]:port'")
            return Address(host, default_port, ip)
        if not rest.startswith(":"):
            raise AddressError(f"{text!r}: expected ':port' after ']'")
        return Address(host, _parse_port(rest[1:], text), ip)
    if s.count(":") > 1:
        # A bare IPv6 literal: only valid where no port is needed.
        try:
            ip = ipaddress.IPv6Address(s)
        except ValueError:
            raise AddressError(f"{text!r}: write IPv6 addresses as '[addr]:port'") from None
        if need_port:
            raise AddressError(f"{text!r}: no port; write it as '[{s}]:port'")
        return Address(s, default_port, ip)
    host, sep, port_text = s.partition(":")
    if not sep:
        if need_port:
            raise AddressError(f"{text!r}: no port; write it as '{s}:port'")
        return Address(host, default_port, _check_host(host, text))
    return Address(host, _parse_port(port_text, text), _check_host(host, text))


def format_ip(ip: str) -> str:
    """An IP string as the SDK reports it (IPv4-mapped IPv6 shown as IPv4)."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip
