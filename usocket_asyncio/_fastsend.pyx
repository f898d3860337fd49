# cython: language_level=3, boundscheck=False, wraparound=False
"""The direct send path's optional compiled helper: `send(2)` straight from the caller's
buffer, with no copy and without releasing the GIL (a send to a non-blocking socket
never waits). Built with the compiled build (setup.py); `_direct.py` uses it when it is
there and `socket.send` on a borrowed socket object when it is not. It never owns the
descriptor: the transport does (see `_direct.py`). `DgramSender` is UDP's: `send(2)`
or `sendto(2)` from the caller's buffer, the last destination's sockaddr kept (`_udp.py`)."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_SetFromErrno
from libc.errno cimport EINTR, errno


cdef extern from "sys/socket.h" nogil:
    ssize_t c_send "send"(int fd, const void *buf, size_t n, int flags)


cdef class FdSender:
    """Sends on descriptor `fd` (which it never closes)."""

    cdef readonly int fd

    def __cinit__(self, int fd):
        self.fd = fd

    def send(self, data, int flags=0, Py_ssize_t size=-1):
        """`send(2)` of the bytes of `data` (any contiguous buffer; its first `size`
        bytes when `size` is not -1): the count the kernel took. Raises `OSError` as
        `socket.send` does (`BlockingIOError` when the kernel takes nothing now), and
        `ValueError` for a `size` beyond the buffer."""
        cdef Py_buffer view
        cdef ssize_t n
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if size < 0:
                size = view.len
            elif size > view.len:
                raise ValueError(f"size={size} but the buffer holds {view.len} bytes")
            while True:
                n = c_send(self.fd, view.buf, <size_t>size, flags)
                if n >= 0:
                    return n
                if errno != EINTR:
                    PyErr_SetFromErrno(OSError)
        finally:
            PyBuffer_Release(&view)


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
            if size < 0:
                size = view.len
            elif size > view.len:
                raise ValueError(f"size={size} but the buffer holds {view.len} bytes")
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
