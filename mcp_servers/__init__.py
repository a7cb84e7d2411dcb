"""The specialised MCP servers: postgres, clickhouse, chroma, intelligence."""
