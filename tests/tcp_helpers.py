"""Moved to `kit.streams`; only test_contract.py still imports these names from here."""

from kit.streams import captured_log as captured_log
from kit.streams import from_another_thread as from_another_thread
