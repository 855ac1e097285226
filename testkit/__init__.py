"""What the tests and the benchmark share: fakes, peers and processes around a real server.

`tests/` and `bench/` both import this package; it imports `clinsum` and nothing of theirs,
so neither imports the other through it.

- `processes.py`: `ServerProcess` (a real `mcp_server.py` on a free loopback port),
  `free_port`, `read_until`, `stop_process`, `model_pids`;
- `rpc.py`: raw JSON-RPC peers with one set of methods (`Peer` over WebSocket, `HttpPeer` over
  Streamable HTTP, `StdioPeer` to a `--stdio` child);
- `fake_ollama.py`: Ollama's wire format on loopback (`python -m testkit.fake_ollama`);
- `inprocess.py`: the fake Ollama on its own thread, in-process servers whose internals a
  test may count, raw WebSocket and HTTP clients, /proc counters;
- `web.py`: the page's server in-process (`PageServer`) and Debian's chromium;
- `pg.py`: a private PostgreSQL cluster (`PgCluster`); `haproxy.py`: HAProxy in front of
  replicas.
"""
