"""Moved to `kit.dtls`; only test_contract.py still imports this name from here."""

from kit.dtls import dtls_ctx as dtls_ctx
