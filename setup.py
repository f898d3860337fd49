"""The build: pure Python by default; with USOCKET_ASYNCIO_COMPILE=1, the socket engine
is also compiled to C extension modules by mypyc (they load in place of the .py files).

    pip install mypy wheel pyOpenSSL cryptography
    USOCKET_ASYNCIO_COMPILE=1 pip install --no-build-isolation .

Everything else (names, behaviour, the tests) is the same in both builds; check which one
is running with `usocket_asyncio.COMPILED`.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules the compiled build turns into C: the socket engine and the kinds on it
# (TCP, local, TLS, UDP), where each request passes. The public interfaces (_api), the
# loop and timers (_iomux) and the log (_log) stay Python, since apps subclass USocket,
# UTimer, IIoMux and IInstanceLog; so do DTLS (_dtls, _context: per record, the cost is
# OpenSSL's) and the address parser (its errors for wrong types are its own).
COMPILED_MODULES = [
    "usocket_asyncio/_base.py",
    "usocket_asyncio/_stream.py",
    "usocket_asyncio/_tcp.py",
    "usocket_asyncio/_local.py",
    "usocket_asyncio/_tls.py",
    "usocket_asyncio/_udp.py",
    "usocket_asyncio/_datagram.py",
]

ext_modules = []
if os.environ.get("USOCKET_ASYNCIO_COMPILE") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        raise SystemExit(
            "USOCKET_ASYNCIO_COMPILE=1 needs mypy (which brings mypyc) in the build "
            "environment: pip install mypy wheel pyOpenSSL cryptography, then build with "
            "--no-build-isolation"
        ) from e
    ext_modules = mypycify(COMPILED_MODULES, opt_level="3")

setup(ext_modules=ext_modules)
