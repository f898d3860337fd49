"""A pytest plugin: `async def` tests in test_asyncio_app.py run on both loops.

pytest-asyncio (1.x) makes its loops through the `pytest_asyncio_loop_factories` hook;
this one offers the default asyncio loop and uvloop to the modules that load the plugin
(`pytest_plugins = ["kit.asyncio_loops"]`), and only the default loop to every other test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

LOOP_MODULES = {"test_asyncio_app.py"}


def _uvloop() -> asyncio.AbstractEventLoop:
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in LOOP_MODULES:
        return {"asyncio": asyncio.new_event_loop, "uvloop": _uvloop}
    return {"default": asyncio.new_event_loop}
