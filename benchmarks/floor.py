"""The floor: what an SDK-model socket costs per request before the rest of the contract.

A `Floor` is no socket of the library. It keeps of the contract only what no
implementation can drop, and nothing else:

- the thread check of each call the app makes (`Send`, `Recv`: the contract's "any
  other call ... made while its loop runs in another thread raises at once"),
- on uvloop, in the pure build, the copy out of the loop's read area into the app's
  buffer (uvloop keeps what `get_buffer` returned exported until `buffer_updated`
  returns, so reading into the app's bytearray itself would make a resize inside
  `SocketRecvResult` raise there and nowhere else); the compiled floor reads in place
  through the library's `RecvTarget`, as the compiled library does,
- the app's callbacks, called the way the library calls them: `SocketRecvResult` from the
  read event, and in the flow style `SocketSendResult` right after it.

It has no state machine, no hold for bytes that come with no `Recv` pending, no partial
`Recv`, no queue of `Recv`s, no check of `len`, no partial write (the kernel is taken to
have taken every byte), no `Shutdown`, no end: it serves the echo benchmark and nothing
else. Its instruction count per request (`python -m benchmarks.callgrind --impls
floor-plain,floor-flow`, and `floorc-...` for the compiled one: this module built by mypyc
beside the compiled library) is what an implementation of the model in the same language
pays before it keeps the rest of the contract: what the library costs above it is the
price of that rest and of its own bookkeeping. It is a floor in practice, not a proof: a
trick can still shave a little off it (the compiled library reuses its receive target
for the same buffer where this aims it anew at each read, and costs 40 instructions less
on the tcp plain echo).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import struct
from _thread import RLock
from functools import partial
from itertools import repeat
from typing import Any, Final

COMPILED: Final = __file__.endswith((".so", ".pyd"))
"""This module was built by mypyc (`benchmarks.compiled.build_floor`)."""

if COMPILED:
    from usocket_asyncio._fastsend import FdSender, RecvTarget

RECV_SIZE: Final = 256 * 1024
_MSG_NOSIGNAL: Final = 0x4000
_IS_OWNED: Final[Any] = RLock.__dict__["_is_owned"]
_PACKS: Final[list[Any]] = [None] * 4097
"""`struct.Struct(f"{n}s").pack_into` by read size n, made at its first use."""
OWNER: Final[Any] = RLock()
"""Owned by the loop's thread (`own`), as the library's mux owns its lock."""


def own() -> None:
    """The calling thread (the loop's) owns `OWNER` from now on."""
    OWNER.acquire()


class Floor:
    """An echo server's socket with the least the model needs (see the module)."""

    __slots__ = (
        "area",
        "dsend",
        "fd",
        "owner",
        "rbuf",
        "sent",
        "target",
        "tr",
        "user",
        "wsend",
    )

    def __init__(self, user: Any) -> None:
        self.user = user
        self.rbuf: Any = None
        self.sent = False
        self.wsend = "SocketSendResult" in type(user).__dict__
        self.owner: Any = OWNER
        self.fd = -1
        self.area = bytearray(RECV_SIZE)
        self.dsend: Any = None
        self.target: Any = None
        self.tr: Any = None

    # ------------------------------------------------------------------ the loop's events

    def connection_made(self, tr: Any) -> None:
        self.tr = tr
        self.fd = tr.get_extra_info("socket").fileno()
        if COMPILED:
            self.dsend = FdSender(self.fd, _MSG_NOSIGNAL).write
        self.user.SocketAcceptComplete(self)

    def get_buffer(self, sizehint: int) -> Any:
        if self.target is not None:  # the compiled floor on uvloop
            self.target.aim(self.rbuf)
            return self.target
        return self.rbuf

    def buffer_updated(self, nbytes: Any) -> None:
        self.user.SocketRecvResult(self, self.rbuf, nbytes)
        if self.sent:
            self.sent = False
            self.user.SocketSendResult(self)

    def area_updated(self, nbytes: Any) -> None:
        """`buffer_updated` after a read into the loop's area (the pure floor on uvloop)."""
        try:  # one copy, nothing allocated (as the library's `_PACKS`)
            _PACKS[nbytes](self.rbuf, 0, self.area)
        except (IndexError, TypeError):  # a size not met yet, or larger than a pack
            if nbytes >= builtins.len(_PACKS):
                self.rbuf[:nbytes] = memoryview(self.area)[:nbytes]
            else:
                _PACKS[nbytes] = struct.Struct(f"{nbytes}s").pack_into
                _PACKS[nbytes](self.rbuf, 0, self.area)
        self.user.SocketRecvResult(self, self.rbuf, nbytes)
        if self.sent:
            self.sent = False
            self.user.SocketSendResult(self)

    def eof_received(self) -> Any:
        return None

    def connection_lost(self, exc: Any) -> None:
        self.tr = None

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------------ the app's calls

    def Send(self, buf: Any, len: Any = None) -> None:
        if not _IS_OWNED(self.owner):
            raise RuntimeError("Send from another thread")
        if COMPILED:  # the library's helper: from the app's buffer, no copy
            self.dsend(buf, len)
        else:
            os.write(self.fd, buf[:len])
        if self.wsend:
            self.sent = True

    def Recv(self, buf: Any, len: Any = None, recvPartial: bool = False) -> None:
        if not _IS_OWNED(self.owner):
            raise RuntimeError("Recv from another thread")
        self.rbuf = buf

    def Delete(self) -> None:
        if self.tr is not None:
            self.tr.close()


class _Events(asyncio.BufferedProtocol):
    """What the loop's transport gets as its protocol: the floor's events as bound
    methods (asyncio's transport asks `isinstance(protocol, BufferedProtocol)`; on uvloop,
    in the pure build, `get_buffer` is a C callable that returns the read area). The
    library's own `_stream._Events` does the same for a socket, and in the compiled build
    takes nothing else."""

    __slots__ = (
        "buffer_updated",
        "connection_lost",
        "connection_made",
        "eof_received",
        "get_buffer",
        "pause_writing",
        "resume_writing",
    )

    def __init__(self, s: Floor, area_reads: bool) -> None:
        if area_reads:
            self.get_buffer: Any = partial(next, repeat(s.area))
            self.buffer_updated: Any = s.area_updated
        else:
            self.get_buffer = s.get_buffer
            self.buffer_updated = s.buffer_updated
        self.connection_made: Any = s.connection_made
        self.connection_lost: Any = s.connection_lost
        self.eof_received: Any = s.eof_received
        self.pause_writing: Any = s.pause_writing
        self.resume_writing: Any = s.resume_writing


def factory(app: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """The protocol factory of a floor echo server whose app is made by `app` (the apps
    stay interpreted: benchmarks/servers.py)."""
    uv = type(loop).__module__.startswith("uvloop")

    def new() -> _Events:
        s = Floor(app())
        if COMPILED and uv:
            s.target = RecvTarget()
        return _Events(s, uv and not COMPILED)

    return new
