# cython: language_level=3, boundscheck=False, wraparound=False
# cython: binding=False, always_allow_keywords=False
"""The stream engine's optional compiled helper, built with the compiled build (setup.py).

`FdSender` is the direct send path's `send(2)` straight from the caller's buffer, with no
copy and without releasing the GIL (a send to a non-blocking socket never waits).
`_direct.py` uses it when it is there and `socket.send` on a borrowed socket object when
it is not. It never owns the descriptor: the transport does (see `_direct.py`).

`RecvTarget` is what `StreamSocket.get_buffer` hands a plain socket transport to read
into: the part of the app's bytearray the pending `Recv` still wants, exported without
an export of the bytearray itself (see `RecvTarget`).

`DgramSender` is UDP's: `send(2)` or `sendto(2)` from the caller's buffer, the last
destination's sockaddr kept (`_udp.py`).
"""

from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_ND,
    PyBUF_SIMPLE,
    PyBUF_STRIDES,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_SetFromErrno
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from libc.errno cimport EINTR, errno


cdef extern from "sys/socket.h" nogil:
    ssize_t c_send "send"(int fd, const void *buf, size_t n, int flags)


cdef char *_B = b"B"
"""The format of a byte buffer (a C string that lives as long as the module)."""


cdef extern from "Python.h":
    Py_ssize_t _as_ssize "PyLong_AsSsize_t"(object) noexcept
    bint _err_occurred "PyErr_Occurred"() noexcept
    void _err_clear "PyErr_Clear"() noexcept


cdef inline Py_ssize_t _want(object size, Py_ssize_t n) noexcept:
    """How many bytes of `n` a `write(data, size)` sends: all for None, `size` for an int
    from 0 to `n`; -1 (nothing raised) for anything else."""
    cdef Py_ssize_t w
    if size is None:
        return n
    if type(size) is not int:
        return -1
    w = _as_ssize(size)
    if w == -1 and _err_occurred():  # too large for a Py_ssize_t
        _err_clear()
        return -1
    if w < 0 or w > n:
        return -1
    return w


cdef inline Py_ssize_t _span(Py_buffer *view, Py_ssize_t size) except -1:
    """How many bytes of `view` a send takes: all of them for a `size` below 0, else
    `size`, which must not be beyond the buffer (`ValueError`)."""
    if size < 0:
        return view.len
    if size > view.len:
        raise ValueError(f"size={size} but the buffer holds {view.len} bytes")
    return size


cdef class FdSender:
    """Sends on descriptor `fd` (which it never closes); `flags` are those of `write`."""

    cdef readonly int fd
    cdef readonly int flags

    def __cinit__(self, int fd, int flags=0):
        self.fd = fd
        self.flags = flags

    def send(self, data, int flags=0, Py_ssize_t size=-1):
        """`send(2)` of the bytes of `data` (any contiguous buffer; its first `size`
        bytes when `size` is not -1): the count the kernel took. Raises `OSError` as
        `socket.send` does (`BlockingIOError` when the kernel takes nothing now), and
        `ValueError` for a `size` beyond the buffer."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._send(<const char *>view.buf, _span(&view, size), flags)
        finally:
            PyBuffer_Release(&view)

    def write(self, data, size=None):
        """`Send(data, size)`'s direct send, with the flags given at construction: the
        count of bytes the kernel did NOT take (0: all of them), or -1, having sent
        nothing, when `data` is not a bytearray, a bytes or a one-dimensional byte
        memoryview, or `size` (None: all) is not an int from 0 to its length (the
        caller's general path then checks and words the mistake). Raises `OSError` as
        `send`. A bytearray or bytes is read in place, without a buffer export: nothing
        runs between the look at its storage and the `send(2)`."""
        cdef Py_buffer view
        cdef Py_buffer *mvb
        cdef Py_ssize_t want, left
        t = type(data)
        if t is bytearray:
            want = _want(size, PyByteArray_GET_SIZE(data))
            if want < 0:
                return -1
            left = want - self._send(PyByteArray_AS_STRING(data), want, self.flags)
        elif t is bytes:
            want = _want(size, PyBytes_GET_SIZE(data))
            if want < 0:
                return -1
            left = want - self._send(PyBytes_AS_STRING(data), want, self.flags)
        elif t is memoryview:
            mvb = PyMemoryView_GET_BUFFER(data)
            if mvb.ndim != 1 or mvb.itemsize != 1:
                return -1
            try:  # refuses a released or strided view: the general path says why
                PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            except Exception:
                return -1
            try:
                want = _want(size, view.len)
                if want < 0:
                    return -1
                left = want - self._send(<const char *>view.buf, want, self.flags)
            finally:
                PyBuffer_Release(&view)
        else:
            return -1
        if left == 0:  # (the constant: no int made)
            return 0
        return left

    cdef Py_ssize_t _send(self, const char *p, Py_ssize_t size, int flags) except -1:
        cdef ssize_t n
        while True:
            n = c_send(self.fd, p, <size_t>size, flags)
            if n >= 0:
                return n
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
                return -1


cdef class RecvTarget:
    """A part of a bytearray to read into, exported without exporting the bytearray.

    `prepare(ba, pos, end)` points it at `ba[pos:end]`; its buffer is then that part of
    `ba`'s storage, writable, while `ba` itself has no export: the app may resize `ba`
    in the `SocketRecvResult` the read leads to (uvloop keeps what `get_buffer` returned
    exported until `buffer_updated` returns, so a view of `ba` itself would make that
    resize raise `BufferError`). It keeps a reference to `ba`, never frees it.

    Safe only where the reader takes the buffer, reads into it and is done writing
    before any Python code that could resize `ba` runs: uvloop's stream transports
    (libuv's alloc callback takes it, `read(2)` fills it, the read callback calls
    `buffer_updated` with nothing in between; the export is released after it, and
    nothing writes through it after the read) and asyncio's selector transport
    (`recv_into`, released before `buffer_updated`). Each export looks at `ba`'s
    storage anew, and refuses (`BufferError`) when `ba` is shorter than `end` now.
    """

    cdef object ba
    cdef Py_ssize_t pos
    cdef Py_ssize_t end

    def prepare(self, ba, Py_ssize_t pos, Py_ssize_t end):
        """Point at `ba[pos:end]` (`end` -1: to its end) for the next read: self, or None
        (and nothing to read into) when `ba` is not a bytearray, or the part is empty or
        beyond its length."""
        if type(ba) is not bytearray:
            self.ba = None
            return None
        if end == -1:
            end = PyByteArray_GET_SIZE(ba)
        if pos < 0 or end <= pos or end > PyByteArray_GET_SIZE(ba):
            self.ba = None
            return None
        self.ba = ba
        self.pos = pos
        self.end = end
        return self

    def aim(self, ba):
        """`prepare(ba, 0, -1)`: all of `ba` (one argument: the cheapest call)."""
        if type(ba) is not bytearray or PyByteArray_GET_SIZE(ba) == 0:
            self.ba = None
            return None
        self.ba = ba
        self.pos = 0
        self.end = PyByteArray_GET_SIZE(ba)
        return self

    def clear(self):
        """Point at nothing (the reference to the bytearray is dropped)."""
        self.ba = None

    def __len__(self):
        return self.end - self.pos if self.ba is not None else 0

    def __getbuffer__(self, Py_buffer *view, int flags):
        ba = self.ba
        if ba is None or self.end > PyByteArray_GET_SIZE(ba):
            raise BufferError("RecvTarget: nothing prepared, or the bytearray shrank")
        # what PyBuffer_FillInfo does, for this one shape
        view.buf = PyByteArray_AS_STRING(ba) + self.pos
        view.obj = self
        view.len = self.end - self.pos
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if (flags & PyBUF_FORMAT) == PyBUF_FORMAT:
            view.format = _B
        view.ndim = 1
        view.shape = &view.len if (flags & PyBUF_ND) == PyBUF_ND else NULL
        view.strides = &view.itemsize if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL


cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        pass
    ssize_t c_sendto "sendto"(
        int fd, const void *buf, size_t n, int flags, const sockaddr *addr, socklen_t alen
    )
    int AF_INET
    int AF_INET6

cdef extern from "netinet/in.h" nogil:
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned int htonl(unsigned int)

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)

from libc.string cimport memset


cdef class DgramSender:
    """Sends datagrams on descriptor `fd` of a UDP socket of `family` (which it never
    closes): `send(2)` to the connected peer, `sendto(2)` to an address, from the
    caller's buffer with no copy and without releasing the GIL. The sockaddr of the last
    address object is kept: a reply to the same peer (the same tuple) is not parsed
    again. An address it does not parse itself (a name, a scoped IPv6 literal) goes
    through `sock.sendto`, which parses every form."""

    cdef readonly int fd
    cdef int family
    cdef object sock
    cdef object last
    cdef sockaddr_storage sa
    cdef socklen_t salen

    def __cinit__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.last = None
        self.salen = 0

    cdef bint _parse(self, addr) except -1:
        """Make `addr` ((host, port) or (host, port, flowinfo, scope_id)) the kept
        sockaddr; False when it is a form left to `sock.sendto`."""
        cdef sockaddr_in *a4
        cdef sockaddr_in6 *a6
        cdef bytes host
        if type(addr) is not tuple or len(addr) < 2 or type(addr[0]) is not str:
            return False
        if type(addr[1]) is not int or not 0 <= addr[1] <= 65535:
            return False
        host = (<str>addr[0]).encode("ascii", "replace")
        memset(&self.sa, 0, sizeof(self.sa))
        if self.family == AF_INET and len(addr) == 2:
            a4 = <sockaddr_in *>&self.sa
            if inet_pton(AF_INET, host, &a4.sin_addr) != 1:
                return False
            a4.sin_family = AF_INET
            a4.sin_port = htons(<unsigned short>addr[1])
            self.salen = sizeof(sockaddr_in)
        elif self.family == AF_INET6 and 2 <= len(addr) <= 4:
            a6 = <sockaddr_in6 *>&self.sa
            if inet_pton(AF_INET6, host, &a6.sin6_addr) != 1:
                return False
            a6.sin6_family = AF_INET6
            a6.sin6_port = htons(<unsigned short>addr[1])
            if len(addr) > 2:
                a6.sin6_flowinfo = htonl(<unsigned int>addr[2])
            if len(addr) > 3:
                a6.sin6_scope_id = <unsigned int>addr[3]
            self.salen = sizeof(sockaddr_in6)
        else:
            return False
        self.last = addr
        return True

    def send(self, data, Py_ssize_t size, addr):
        """One datagram of the first `size` bytes of `data` (any contiguous buffer; all
        of it with -1) to `addr` (a sockaddr tuple; None: the connected peer). Raises
        `OSError` as `socket.sendto` does (`BlockingIOError` when the kernel cannot take
        it now), `ValueError` for a `size` beyond the buffer."""
        cdef Py_buffer view
        cdef ssize_t n
        if addr is not None and addr is not self.last:
            self.last = None
            if not self._parse(addr):
                if size < 0:
                    return self.sock.sendto(data, addr)
                return self.sock.sendto(memoryview(data)[:size], addr)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            size = _span(&view, size)
            while True:
                if addr is None:
                    n = c_send(self.fd, view.buf, <size_t>size, 0)
                else:
                    n = c_sendto(self.fd, view.buf, <size_t>size, 0,
                                 <sockaddr *>&self.sa, self.salen)
                if n >= 0:
                    return n
                if errno != EINTR:
                    PyErr_SetFromErrno(OSError)
        finally:
            PyBuffer_Release(&view)
