"""Local (Unix domain stream) sockets: failure reasons provoked for real, and the
rules for the socket file."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import pytest
from kit.loop import Mux, R, Recorder
from kit.streams import captured_log, client, ended, expect_end, listener

from usocket_asyncio import (
    LOG_LDS,
    CreateLocalSocketProvider,
    IInstanceLog,
    ISocket,
    QosTrafficType,
)
from usocket_asyncio._local import MAX_PATH_BYTES


def local(mux: Mux, log: IInstanceLog) -> Callable[[Recorder], ISocket]:
    prov = CreateLocalSocketProvider()
    return lambda rec: prov.CreateSocket(mux, rec, log)


def long_path(tmp: str, nbytes: int) -> str:
    return os.path.join(tmp, "x" * (nbytes - len(tmp) - 1))


# ----------------------------------------------------------------------- failure reasons


@pytest.mark.parametrize("extra", [1, 50])
def test_connect_path_over_the_limit(mux: Mux, short_tmp: str, extra: int) -> None:
    log, lines = captured_log(LOG_LDS)
    path = long_path(short_tmp, MAX_PATH_BYTES + extra)
    expect_end(mux, local(mux, log), lambda s: s.Connect(path), R.SOCKET_ADDRESS_INVALID)
    assert "over the kernel's limit" in lines.text()


def test_bind_path_over_the_limit(mux: Mux, short_tmp: str) -> None:
    log, lines = captured_log(LOG_LDS)
    path = long_path(short_tmp, MAX_PATH_BYTES + 1)
    expect_end(mux, local(mux, log), lambda s: s.Bind(path), R.SOCKET_ADDRESS_INVALID)
    assert "over the kernel's limit" in lines.text()
    assert not os.path.exists(path)


@pytest.mark.parametrize("path", ["", "a\0b"])
def test_empty_or_nul_path(mux: Mux, path: str) -> None:
    log, _ = captured_log(LOG_LDS)
    expect_end(mux, local(mux, log), lambda s: s.Connect(path), R.SOCKET_ADDRESS_INVALID)
    expect_end(mux, local(mux, log), lambda s: s.Bind(path), R.SOCKET_ADDRESS_INVALID)


def test_a_path_at_the_limit_works(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    path = long_path(short_tmp, MAX_PATH_BYTES)
    lsock, lrec, accepted = listener(mux, log, CreateLocalSocketProvider(), path)
    assert lrec.events == [("bind", path, 0)]
    csock, crec = client(mux, log, CreateLocalSocketProvider(), path)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names())
    for s in (csock, accepted[0][0], lsock):
        s.Delete()


def test_connect_rejected_missing_path(mux: Mux, short_tmp: str) -> None:
    log, lines = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "nobody")
    expect_end(mux, local(mux, log), lambda s: s.Connect(path), R.SOCKET_CONNECT_REJECTED)
    assert "Connect failed" in lines.text()


def test_connect_rejected_stale_socket(mux: Mux, short_tmp: str) -> None:
    log, _ = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "stale")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)  # the file stays, nobody listens
    expect_end(mux, local(mux, log), lambda s: s.Connect(path), R.SOCKET_CONNECT_REJECTED)


def test_connect_rejected_not_a_socket(mux: Mux, short_tmp: str) -> None:
    # Linux answers connect() to a regular file with ECONNREFUSED: nobody listens there
    log, lines = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "file")
    with open(path, "w") as f:
        f.write("not a socket")
    expect_end(mux, local(mux, log), lambda s: s.Connect(path), R.SOCKET_CONNECT_REJECTED)
    assert "Connect failed" in lines.text()


def test_connect_failed_through_a_file(mux: Mux, short_tmp: str) -> None:
    # a path through a regular file: ENOTDIR, not a refusal
    log, lines = captured_log(LOG_LDS)
    f = os.path.join(short_tmp, "f")
    open(f, "w").close()
    path = os.path.join(f, "s")
    expect_end(mux, local(mux, log), lambda s: s.Connect(path), R.SOCKET_CONNECT_FAILED)
    assert "Not a directory" in lines.text() or "NotADirectory" in lines.text()


def test_bind_failed_in_a_missing_directory(mux: Mux, short_tmp: str) -> None:
    log, lines = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "missing", "s")
    expect_end(mux, local(mux, log), lambda s: s.Bind(path), R.SOCKET_BIND_FAILED)
    assert "No such file or directory" in lines.text()


def test_bind_refuses_to_unlink_a_non_socket(mux: Mux, short_tmp: str) -> None:
    log, lines = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "precious")
    with open(path, "w") as f:
        f.write("keep me")
    expect_end(mux, local(mux, log), lambda s: s.Bind(path), R.SOCKET_BIND_FAILED)
    with open(path) as f:
        assert f.read() == "keep me"
    assert "not a socket" in lines.text()


def test_addr_in_use_by_a_live_listener(mux: Mux, short_tmp: str) -> None:
    log, lines = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "live")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        s.listen(1)
        expect_end(mux, local(mux, log), lambda x: x.Bind(path), R.SOCKET_ADDR_IN_USE)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # left alone
        # and the live listener still works
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
    assert "live socket" in lines.text()


# ----------------------------------------------------------------------- the socket file


def test_bind_rules(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    """Mode rw for everyone, port 0, the remote reported as ("", 0), and the file
    removed when the listener closes."""
    path = os.path.join(short_tmp, "s")
    old = os.umask(0o077)
    try:
        lsock, lrec, accepted = listener(mux, log, CreateLocalSocketProvider(), path)
    finally:
        os.umask(old)
    assert lrec.events == [("bind", path, 0)]
    assert lsock.GetLocalAddress() == (path, 0)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    with socket.socket(socket.AF_UNIX) as peer:
        peer.connect(path)
        mux.run_until(lambda: bool(accepted))
        assert lrec.events[-1] == ("listen", "", 0)
        ssock, _srec = accepted[0]
        ssock.Send(b"hi")
        peer.settimeout(5)
        assert peer.recv(2) == b"hi"
        ssock.SetQoS(QosTrafficType.QOS_VOICE)  # no IP: nothing to mark, no error
    lsock.Shutdown()
    ended(mux, lrec)
    assert lrec.shutdown is R.SOCKET_SHUTDOWN_NORMAL
    assert not os.path.exists(path)
    ssock.Delete()
    lsock.Delete()


def test_delete_removes_the_file(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    path = os.path.join(short_tmp, "d")
    lsock, _, _ = listener(mux, log, CreateLocalSocketProvider(), path)
    assert os.path.exists(path)
    lsock.Delete()
    assert not os.path.exists(path)


def test_close_leaves_a_file_someone_else_put_there(
    mux: Mux, log: IInstanceLog, short_tmp: str
) -> None:
    path = os.path.join(short_tmp, "r")
    lsock, _, _ = listener(mux, log, CreateLocalSocketProvider(), path)
    os.unlink(path)
    with open(path, "w") as f:
        f.write("new owner")
    lsock.Delete()
    with open(path) as f:
        assert f.read() == "new owner"


def test_bind_replaces_a_stale_socket(mux: Mux, log: IInstanceLog, short_tmp: str) -> None:
    path = os.path.join(short_tmp, "stale")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)
    lsock, lrec, accepted = listener(mux, log, CreateLocalSocketProvider(), path)
    assert lrec.events == [("bind", path, 0)]
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666  # our file now
    csock, crec = client(mux, log, CreateLocalSocketProvider(), path)
    mux.run_until(lambda: bool(accepted) and "connect" in crec.names())
    assert csock.GetLocalAddress() == ("", 0)  # an unnamed client socket
    for s in (csock, accepted[0][0], lsock):
        s.Delete()


class _FlakyListener:
    def __init__(self, real: socket.socket, n: int) -> None:
        self.real, self.left = real, n

    def accept(self) -> tuple[socket.socket, Any]:
        if self.left:
            self.left -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_accept_emfile_logged_and_listener_keeps_serving(mux: Mux, short_tmp: str) -> None:
    log, lines = captured_log(LOG_LDS)
    path = os.path.join(short_tmp, "e")
    lsock, lrec, accepted = listener(mux, log, CreateLocalSocketProvider(), path)
    real: Any = lsock
    setattr(lsock, "_lsock", _FlakyListener(real._lsock, 2))  # noqa: B010
    with socket.socket(socket.AF_UNIX) as peer:
        peer.connect(path)
        mux.run_until(lambda: bool(accepted), what="accept after EMFILE")
    assert lines.text().count("Too many open files") == 2
    assert lrec.shutdown is None
    accepted[0][0].Delete()
    lsock.Delete()
    assert not os.path.exists(path)
