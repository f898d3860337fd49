"""The SDK's socket examples, ported: an echo server, an echo client, and a demo."""
