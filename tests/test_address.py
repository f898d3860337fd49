"""The address parser: the documented forms, the errors, and (Hypothesis) that no
input whatever makes it raise anything but `AddressError`."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usocket_asyncio._address import Address, AddressError, format_ip, parse_address

SETTINGS = settings(
    derandomize=True,  # seeded: the same examples on every run
    database=None,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    ("text", "host", "port", "ip"),
    [
        ("127.0.0.1:80", "127.0.0.1", 80, "127.0.0.1"),
        ("0.0.0.0:0", "0.0.0.0", 0, "0.0.0.0"),
        ("[::1]:443", "::1", 443, "::1"),
        ("[fe80::1%eth0]:1", "fe80::1%eth0", 1, "fe80::1%eth0"),
        ("[::ffff:1.2.3.4]:5", "::ffff:1.2.3.4", 5, "::ffff:1.2.3.4"),
        ("localhost:65535", "localhost", 65535, None),
        ("a-b.example.com.:1", "a-b.example.com.", 1, None),
        ("  10.0.0.1:7  ", "10.0.0.1", 7, "10.0.0.1"),
    ],
)
def test_forms(text: str, host: str, port: int, ip: str | None) -> None:
    a = parse_address(text)
    assert a == Address(host, port, ipaddress.ip_address(ip) if ip else None)


def test_without_a_port_where_none_is_needed() -> None:
    assert parse_address("127.0.0.1", need_port=False, default_port=9) == Address(
        "127.0.0.1", 9, ipaddress.IPv4Address("127.0.0.1")
    )
    assert parse_address("::1", need_port=False).ip == ipaddress.IPv6Address("::1")
    assert parse_address("[::1]", need_port=False, default_port=3).port == 3
    assert parse_address("host", need_port=False) == Address("host", 0, None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("127.0.0.1", "no port"),
        ("[::1]", "no port"),
        ("::1", "no port"),
        ("host", "no port"),
        ("1.2.3.4:65536", "out of range"),
        ("1.2.3.4:x", "decimal"),
        ("1.2.3.4:", "decimal"),
        ("1.2.3.4:+1", "decimal"),
        ("1.2.3.4:١٢", "decimal"),  # non-ASCII digits
        ("[::1", "missing ']'"),
        ("[::1]80", "':port'"),
        ("[1.2.3.4]:80", "not an IPv6"),
        ("1:2:3:80", "[addr]:port"),
        ("999.0.0.1:80", "not a valid IPv4"),
        ("1.2.3:80", "not a valid IPv4"),
        ("-bad-.com:80", "neither"),
        ("a..b:80", "neither"),
        ("under_score:1", "neither"),
        ("", "empty"),
        ("   ", "empty"),
        (":80", "neither"),
        ("x" * 64 + ":1", "neither"),
        (".".join(["a" * 60] * 5) + ":1", "neither"),
    ],
)
def test_errors_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(AddressError, match=says.replace("[", r"\[").replace("(", r"\(")):
        parse_address(text)


def test_not_a_string() -> None:
    for bad in (None, 80, b"1.2.3.4:80", ("1.2.3.4", 80)):
        with pytest.raises(AddressError, match="string"):
            parse_address(bad)  # type: ignore[arg-type]


def test_address_error_is_a_value_error() -> None:
    assert issubclass(AddressError, ValueError)


def test_format_ip() -> None:
    assert format_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert format_ip("::1") == "::1"
    assert format_ip("10.1.2.3") == "10.1.2.3"
    assert format_ip("::ffff:0:1") == "::ffff:0:1"


# ----------------------------------------------------------------------- properties

ports = st.integers(min_value=0, max_value=65535)
labels = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?\Z")
names = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda n: not all(p.isdigit() for p in n.split(".")))
)


@SETTINGS
@given(st.text(max_size=80), st.booleans(), ports)
def test_any_text_parses_or_raises_address_error(text: str, need: bool, default: int) -> None:
    try:
        a = parse_address(text, need_port=need, default_port=default)
    except AddressError as e:
        assert str(e)
        return
    assert isinstance(a, Address) and 0 <= a.port <= 65535
    assert a.host and a.host in text
    assert a.ip is None or isinstance(a.ip, ipaddress.IPv4Address | ipaddress.IPv6Address)


alphabet = st.sampled_from(list("0123456789abcdef.:[]%-_ xyz/\0\n"))


@SETTINGS
@given(st.text(alphabet=alphabet, max_size=40), st.booleans())
def test_address_like_text_parses_or_raises_address_error(text: str, need: bool) -> None:
    try:
        parse_address(text, need_port=need)
    except AddressError:
        pass


@SETTINGS
@given(st.ip_addresses(v=4), ports)
def test_ipv4_round_trip(ip: ipaddress.IPv4Address, port: int) -> None:
    assert parse_address(f"{ip}:{port}") == Address(str(ip), port, ip)


@SETTINGS
@given(st.ip_addresses(v=6), ports)
def test_ipv6_round_trip(ip: ipaddress.IPv6Address, port: int) -> None:
    a = parse_address(f"[{ip}]:{port}")
    assert a.ip == ip and a.port == port
    assert parse_address(str(ip), need_port=False).ip == ip


@SETTINGS
@given(names, ports)
def test_names_round_trip(name: str, port: int) -> None:
    assert parse_address(f"{name}:{port}") == Address(name, port, None)


@SETTINGS
@given(st.ip_addresses(v=4), st.integers(min_value=65536, max_value=10**30))
def test_ports_out_of_range(ip: ipaddress.IPv4Address, port: int) -> None:
    with pytest.raises(AddressError, match="out of range"):
        parse_address(f"{ip}:{port}")
