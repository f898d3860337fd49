"""IInstanceLog: flags, printf-style formats, HexDump, nothing formatted when off, and
each socket kind logging under its own flag."""

from __future__ import annotations

import array
import logging

import pytest
from kit.loop import ALL_LOG_FLAGS, Mux, Recorder
from kit.streams import captured_log

from usocket_asyncio import (
    LOG_APP,
    LOG_LDS,
    LOG_TCP,
    LOG_TLS,
    LOG_UDP,
    CreateLocalSocketProvider,
    CreateTCPSocketProvider,
    IInstanceLog,
    LogFlags,
)


class Exploding:
    """Fails the test if anything formats it."""

    def __str__(self) -> str:
        raise AssertionError("formatted although the flag is off")

    __repr__ = __str__

    def __index__(self) -> int:
        raise AssertionError("formatted although the flag is off")


def test_flags() -> None:
    log = IInstanceLog()
    assert not log.LogFlagSet(LOG_APP)
    log.SetLogFlags(LOG_APP | LOG_TCP)
    assert log.LogFlagSet(LOG_APP) and log.LogFlagSet(LOG_TCP) and not log.LogFlagSet(LOG_UDP)
    assert log.LogFlagSet(LOG_UDP | LOG_TCP)  # any of the bits
    log.SetLogFlags(0)
    assert not log.LogFlagSet(LOG_APP)
    assert IInstanceLog(LogFlags.LOG_TLS).LogFlagSet(LOG_TLS)


def test_default_logger() -> None:
    assert IInstanceLog().logger is logging.getLogger("usocket_asyncio")


def test_log_writes_only_under_a_set_flag() -> None:
    log, lines = captured_log(LOG_APP)
    log.Log(LOG_APP, "app %d", 1)
    log.Log(LOG_TCP, "tcp %d", 2)
    log.Log(LOG_APP | LOG_TCP, "either %d", 3)
    assert lines.lines == ["LOG_APP app 1", "LOG_APP|LOG_TCP either 3"] or lines.lines == [
        "LOG_APP app 1",
        "LOG_TCP|LOG_APP either 3",
    ]


@pytest.mark.parametrize(
    ("fmt", "args", "out"),
    [
        ("%lu bytes", (5,), "5 bytes"),
        ("%llu/%zu/%hhx", (7, 8, 255), "7/8/ff"),
        ("%ld %li %lld", (-1, 2, -3), "-1 2 -3"),
        ("%p", (255,), "ff"),
        ("%08lx", (0xBEEF,), "0000beef"),
        ("%-5s|", ("ab",), "ab   |"),
        ("%.2f", (1.234,), "1.23"),
        ("100%%", (), "100%%"),  # no args: the text is written as it is
        ("100%% of %s", ("it",), "100% of it"),
        ("%c", ("x",), "x"),
    ],
)
def test_printf_style(fmt: str, args: tuple[object, ...], out: str) -> None:
    log, lines = captured_log(LOG_APP)
    log.Log(LOG_APP, fmt, *args)
    assert lines.lines == [f"LOG_APP {out}"]


def test_nothing_is_formatted_when_the_flag_is_off() -> None:
    log, lines = captured_log(LOG_TCP)
    log.Log(LOG_APP, "%s %d %x", Exploding(), Exploding(), Exploding())
    log.Log(LOG_APP, "%s %s %s", "too few")  # a bad format is not even looked at
    log.HexDump(LOG_APP, b"abc")
    assert lines.lines == []


def test_unknown_flag_is_shown_in_hex() -> None:
    log, lines = captured_log(0x400000000)  # no SDK flag has this bit
    log.Log(0x400000000, "x")
    assert lines.lines == ["0x400000000 x"]


def test_hexdump() -> None:
    log, lines = captured_log(LOG_APP)
    data = bytes(range(40))
    log.HexDump(LOG_APP, data)
    text = lines.lines[0].splitlines()
    assert text[0] == "LOG_APP hexdump 40 bytes"
    assert text[1].startswith("00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f")
    assert text[2].startswith("00000010  10 11")
    assert text[3].startswith("00000020  20 21 22 23 24 25 26 27  ")
    assert text[3].endswith(" !\"#$%&'")
    assert len(text) == 4


def test_hexdump_len_and_buffers() -> None:
    log, lines = captured_log(LOG_APP)
    log.HexDump(LOG_APP, bytearray(b"Hello, world"), 5)
    log.HexDump(LOG_APP, memoryview(b"xyz")[1:])
    log.HexDump(LOG_APP, memoryview(array.array("H", [0x4142])))
    log.HexDump(LOG_APP, b"")
    assert lines.lines[0].splitlines()[1].endswith("Hello")
    assert "hexdump 5 bytes" in lines.lines[0]
    assert lines.lines[1].splitlines()[1].endswith("yz")
    assert "hexdump 2 bytes" in lines.lines[2]
    assert lines.lines[3].splitlines()[0] == "LOG_APP hexdump 0 bytes"


@pytest.mark.parametrize(
    ("kind", "flag"), [("tcp", LOG_TCP), ("local", LOG_LDS)], ids=["tcp", "local"]
)
def test_socket_kinds_log_under_their_flag(mux: Mux, kind: str, flag: int, short_tmp: str) -> None:
    prov = CreateTCPSocketProvider() if kind == "tcp" else CreateLocalSocketProvider()
    addr = "127.0.0.1:99999" if kind == "tcp" else "/" + "x" * 200

    def run(flags: int) -> list[str]:
        log, lines = captured_log(flags)
        rec = Recorder()
        sock = prov.CreateSocket(mux, rec, log)
        sock.Connect(addr)
        mux.run_until(lambda: rec.shutdown is not None)
        sock.Delete()
        return lines.lines

    assert run(ALL_LOG_FLAGS & ~flag) == []
    on = run(flag)
    assert on and all(line.startswith(LogFlags(flag).name or "") for line in on)
    assert any("address invalid" in line for line in on)
