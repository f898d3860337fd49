"""UDP (bound and connected) and DTLS through the generic datagram checker
(tests/kit/conformance.py), on both loops."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kit.conformance import DATAGRAM_CHECKS, DATAGRAM_KINDS, run_dgram_check
from kit.loop import Mux, have_ipv6

from usocket_asyncio import IInstanceLog


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(DATAGRAM_KINDS))
@pytest.mark.parametrize(
    "check", DATAGRAM_CHECKS, ids=lambda c: c.__name__.removeprefix("check_dgram_")
)
def test_datagram_conformance(
    mux: Mux,
    log: IInstanceLog,
    kind: str,
    check: Callable[..., None],
) -> None:
    if DATAGRAM_KINDS[kind].use_ipv6 and not have_ipv6():
        pytest.skip("no IPv6 loopback")
    run_dgram_check(check, mux, log, DATAGRAM_KINDS[kind])
