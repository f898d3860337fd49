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


def _bad_flag(call: str, flag: object) -> TypeError:
    what = type(flag).__name__
    if isinstance(flag, bytes | bytearray | memoryview):
        return TypeError(
            f"{call}: the first argument is the log flag, not a {what}; where SDK code "
            "has debug->HexDump(buf, len), write log.HexDump(LOG_APP, buf, len)"
        )
    return TypeError(f"{call}: the log flag must be an int (a LogFlags bit), not {what}")


class IInstanceLog:
    """The SDK's instance log: writes only the messages whose flag is set.

    Lines go to a `logging.Logger` (the `usocket_asyncio` logger by default) at INFO level,
    with the flag's name in front; nothing is formatted while the flag is off. Configure
    `logging` to see them, e.g. `logging.basicConfig(level=logging.INFO)`.

    Args:
        logFlags: the `LogFlags` bits to log (OR them together); 0 logs nothing.
        logger: where to write; the `usocket_asyncio` logger by default.

    Example:
        ```python
        logging.basicConfig(level=logging.INFO)
        log = IInstanceLog(LogFlags.LOG_APP | LogFlags.LOG_TCP)
        log.Log(LOG_APP, "%lu bytes from %s", n, addr)
        ```
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
        """Whether messages under `flag` are written.

        Args:
            flag: a `LogFlags` bit (or several OR-ed: true when any is set).

        Returns:
            True when `flag` is among the log's flags.
        """
        try:
            return bool(self._flags & flag)
        except TypeError:
            raise _bad_flag("LogFlagSet(flag)", flag) from None

    def SetLogFlags(self, flags: int) -> None:
        """Replace the set of flags to log.

        Args:
            flags: the new `LogFlags` bits (OR-ed); 0 logs nothing.
        """
        self._flags = int(flags)

    def Log(self, flag: int, fmt: str, *args: Any) -> None:
        """Write `fmt % args` if `flag` is set.

        Args:
            flag: the `LogFlags` bit the message belongs to.
            fmt: a printf-style format; the SDK's length modifiers (`%lu`, `%zu`, `%llx`,
                ...) and `%p` are accepted.
            *args: the values for `fmt`.

        Raises:
            TypeError: `flag` is no int.
        """
        try:
            if not self._flags & flag:
                return
        except TypeError:
            raise _bad_flag("Log(flag, fmt, *args)", flag) from None
        text = _python_format(fmt) % args if args else fmt
        self._logger.info("%s %s", _flag_name(flag), text)

    def HexDump(
        self, flag: int, buf: bytes | bytearray | memoryview, len: int | None = None
    ) -> None:
        """Write a hex dump of the first `len` bytes of `buf` if `flag` is set.

        The signature is the SDK's `IInstanceLog::HexDump(flag, buffer, size)`: the flag
        comes first. The SDK's `debug->HexDump(buf, len)` (no flag) has no equivalent
        here; calling it so raises a `TypeError` that says how to write it.

        Args:
            flag: the `LogFlags` bit the dump belongs to.
            buf: the bytes (bytes, bytearray or memoryview).
            len: how many bytes of `buf`; None for all of it.

        Raises:
            TypeError: `flag` is no int (e.g. the buffer was passed first).
        """
        try:
            if not self._flags & flag:
                return
        except TypeError:
            raise _bad_flag("HexDump(flag, buf, len=None)", flag) from None
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
