"""The build: pure Python by default; with USOCKET_ASYNCIO_COMPILE=1, the socket engine
is also compiled to C extension modules by mypyc (they load in place of the .py files),
and the direct send path gets its helper (`_fastsend.pyx`, Cython: `send(2)` from the
app's buffer; without it `_direct.py` uses `socket.send`).

    USOCKET_ASYNCIO_COMPILE=1 pip install .

needs only a C compiler: pip's isolated build first asks this file what the build needs
(setuptools hands `setup_requires` on as build requirements), installs mypy (which brings
mypyc), Cython and the dependencies mypyc type-checks against, then runs it again to
compile.
Everything else (names, behaviour, the tests) is the same in both builds; check which one
is running with `usocket_asyncio.COMPILED`.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules the compiled build turns into C: the socket engine and the kinds on it
# (TCP, local, TLS, UDP) with the failure translator they share (_errors), where each
# request passes. The public interfaces (_api), the loop and timers (_iomux) and the log
# (_log) stay Python, since apps subclass USocket, UTimer, IIoMux and IInstanceLog; so
# do DTLS (_dtls, _context: per record, the cost is OpenSSL's) and the address parser
# (its errors for wrong types are its own).
COMPILED_MODULES = [
    "usocket_asyncio/_base.py",
    "usocket_asyncio/_stream.py",
    "usocket_asyncio/_tcp.py",
    "usocket_asyncio/_local.py",
    "usocket_asyncio/_tls.py",
    "usocket_asyncio/_udp.py",
    "usocket_asyncio/_datagram.py",
    "usocket_asyncio/_errors.py",
]
FAST_SEND = "usocket_asyncio/_fastsend.pyx"
"""The direct send path's helper (Cython), built beside the mypyc modules."""
COMPILE_NEEDS = ["mypy>=1.8", "Cython>=3", "pyOpenSSL>=23.2", "cryptography>=41"]
"""What the compiled build needs: mypyc, and the packages it type-checks the engine against
(the runtime dependencies of pyproject.toml)."""

ext_modules = []
setup_requires: list[str] = []
if os.environ.get("USOCKET_ASYNCIO_COMPILE") == "1":
    try:
        from Cython.Build import cythonize
        from mypyc.build import mypycify
    except ImportError:
        # pip's first pass (or a build without mypy or Cython at hand): ask for what is
        # missing; setuptools makes it a build requirement, pip installs it and comes back.
        setup_requires = COMPILE_NEEDS
    else:
        ext_modules = mypycify(COMPILED_MODULES, opt_level="3")
        ext_modules += cythonize([FAST_SEND], quiet=True, language_level=3)  # type: ignore[no-untyped-call]

setup(ext_modules=ext_modules, setup_requires=setup_requires)
