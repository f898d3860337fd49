"""TLS 1.2 and 1.3 through the generic stream checker (tests/kit/conformance.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kit.conformance import ALL_CHECKS, TLS_VERSIONS, run_check, tls_kind
from kit.loop import Mux

from usocket_asyncio import IInstanceLog


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", list(TLS_VERSIONS))
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_tls_conformance(
    mux: Mux, log: IInstanceLog, ca: Any, version: str, check: Callable[..., None], short_tmp: str
) -> None:
    run_check(check, mux, log, tls_kind(ca, version), short_tmp)
