"""Benchmarks: the library's servers against raw asyncio servers (``python -m benchmarks``)."""
