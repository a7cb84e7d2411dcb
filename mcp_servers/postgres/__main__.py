"""`python -m mcp_servers.postgres`: the PostgreSQL server alone over stdio (`neonblue serve postgres`).

Reads DATABASE_URL (unset: the embedded PostgreSQL of `neonblue up`). Logs go to
stderr; stdout carries the MCP protocol only.
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
        logging.getLogger("mcp_servers.postgres").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
