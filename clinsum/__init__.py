"""clinsum: clinical patient summaries over JSON-RPC 2.0 and MCP."""

__version__ = "0.1.0"
