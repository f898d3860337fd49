"""The tests' shared scaffolding, one module per kind of thing it holds.

- `loop`: the test event loop (`Mux`, whose waits wake on callbacks), the recording
  `Recorder`, ports, file descriptors and memory of this process;
- `certs`: TLS/DTLS contexts and certificates, a listening `Server`, `connect`, `delete`,
  `ended_once`;
- `streams`: TCP and local listeners and clients, captured logs, calls from another thread;
- `dtls`: DTLS contexts, a lossy relay, a hand-driven client, an `IDtls` endpoint;
- `peers`: the openssl/gnutls/curl command-line peers and their output;
- `relays`: loopback fault injection between stream or datagram peers;
- `machines`: the Hypothesis state machine of random call sequences (stream or UDP);
- `load`: echo servers and clients for the load tests;
- `asyncio_loops`: a pytest plugin that runs `async def` tests on both loops;
- `exhaust_fds`, `idtls_netns`: scripts the tests run in a child process.

Test modules import from here (tests/ is on sys.path through the rootdir conftest),
never from one another.
"""
