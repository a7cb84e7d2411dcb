"""`python -m mcp_servers.clickhouse`: the ClickHouse server alone over stdio (`neonblue serve clickhouse`).

Reads CLICKHOUSE_URL (unset: chDB under NEONBLUE_HOME, which this process then
owns: chDB lets one process open a data directory). Logs go to stderr; stdout
carries the MCP protocol only.
"""

import sys

from mcp_servers import clickhouse
from mcp_servers.stdio import stdio_main

if __name__ == "__main__":
    sys.exit(stdio_main("clickhouse", clickhouse))
