"""`python -m mcp_servers.clickhouse`: the ClickHouse server alone over stdio (`neonblue serve clickhouse`).

Reads CLICKHOUSE_URL (unset: chDB under NEONBLUE_HOME, which this process then
owns: chDB lets one process open a data directory). Logs go to stderr; stdout
carries the MCP protocol only.
"""

from __future__ import annotations

import logging
import sys

import anyio

from mcp_servers.errors import BackendUnavailable
from schemas.settings import get_settings

from . import build_server, open_service


async def serve() -> None:
    async with open_service(get_settings()) as service:
        await build_server(service).run_stdio_async()


def main() -> int:
    settings = get_settings()
    logging.basicConfig(stream=sys.stderr, level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        anyio.run(serve)
    except BackendUnavailable as exc:
        logging.getLogger("mcp_servers.clickhouse").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
