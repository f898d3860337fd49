# cython: language_level=3, boundscheck=False, wraparound=False
"""The direct send path's optional compiled helper: `send(2)` straight from the caller's
buffer, with no copy and without releasing the GIL (a send to a non-blocking socket
never waits). Built with the compiled build (setup.py); `_direct.py` uses it when it is
there and `socket.send` on a borrowed socket object when it is not. It never owns the
descriptor: the transport does (see `_direct.py`)."""

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
