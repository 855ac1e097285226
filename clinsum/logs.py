"""Server log lines as people watching the terminal know them: `[WebSocket] ...`.

Each concern logs through a logger named after its tag, so the tag is the logger's name and
`--log-level` filters them all at once. Third-party loggers stay at WARNING whatever the
level: websockets logs handshake headers at DEBUG, and those carry the bearer token.
"""

from __future__ import annotations

import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
# The MCP SDK and uvicorn log every request and session at INFO under their own names;
# our faces log what people watch under their own tags.
_QUIET = (
    "websockets",
    "httpx",
    "httpcore",
    "chromadb",
    "urllib3",
    "mcp",
    "uvicorn",
    "sse_starlette",
    "psycopg",
)


def setup(level: str = "info") -> None:
    """Send tagged lines to stderr at `level`; repeated calls replace the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d [%(name)s] %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
