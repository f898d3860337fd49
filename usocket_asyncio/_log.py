"""IInstanceLog: the SDK's flag-filtered, printf-style log on top of `logging`."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from ._types import LogFlags

_DEFAULT_LOGGER = logging.getLogger("usocket_asyncio")

# printf length modifiers the SDK's format strings use (%lu, %llu, %zu, %hhx, ...)
# and `%p`, none of which Python's %-operator understands.
_PRINTF_FIX = re.compile(r"%([-+ #0]*\d*(?:\.\d+)?)(?:hh|h|ll|l|z|j|t|L|q)?([diouxXeEfgGcsp%])")


@functools.lru_cache(maxsize=512)
def _python_format(fmt: str) -> str:
    def fix(m: re.Match[str]) -> str:
        conv = m.group(2)
        if conv == "p":
            conv = "x"
        return "%" + m.group(1) + conv

    return _PRINTF_FIX.sub(fix, fmt)


def _flag_name(flag: int) -> str:
    try:
        name = LogFlags(flag).name
    except ValueError:
        name = None
    return name or hex(flag)


class IInstanceLog:
    """A log that writes only the messages whose flag is set.

    Args:
        logFlags: the bits of `LogFlags` to log.
        logger: where to write; the `usocket_asyncio` logger by default. Messages go out
            at INFO level with the flag's name in front.
    """

    __slots__ = ("_flags", "_logger")

    def __init__(self, logFlags: int = 0, logger: logging.Logger | None = None) -> None:
        self._flags = int(logFlags)
        self._logger = logger if logger is not None else _DEFAULT_LOGGER

    @property
    def logger(self) -> logging.Logger:
        """The `logging.Logger` this log writes to."""
        return self._logger

    def LogFlagSet(self, flag: int) -> bool:
        """True when messages under `flag` are written."""
        return bool(self._flags & flag)

    def SetLogFlags(self, flags: int) -> None:
        """Replace the set of flags to log."""
        self._flags = int(flags)

    def Log(self, flag: int, fmt: str, *args: Any) -> None:
        """Write `fmt % args` (printf style, `%lu` and friends allowed) if `flag` is set."""
        if not self._flags & flag:
            return
        text = _python_format(fmt) % args if args else fmt
        self._logger.info("%s %s", _flag_name(flag), text)

    def HexDump(
        self, flag: int, buf: bytes | bytearray | memoryview, len: int | None = None
    ) -> None:
        """Write a hex dump of the first `len` bytes of `buf` (all of it by default)."""
        if not self._flags & flag:
            return
        data = bytes(memoryview(buf).cast("B")[: len if len is not None else None])
        lines = []
        for off in range(0, max(1, data.__len__()), 16):
            chunk = data[off : off + 16]
            hexpart = " ".join(f"{b:02x}" for b in chunk)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            lines.append(f"{off:08x}  {hexpart:<47}  {text}")
        self._logger.info(
            "%s hexdump %d bytes\n%s", _flag_name(flag), data.__len__(), "\n".join(lines)
        )
