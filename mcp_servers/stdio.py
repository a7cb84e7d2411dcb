"""One server alone over stdio: what `python -m mcp_servers.<name>` runs.

Each server's `__main__` passes its own package (which exports `open_service` and
`build_server`), so running a server imports that server only, never the registry
of all of them.
"""

from __future__ import annotations

import logging
from types import ModuleType

import anyio

from schemas.errors import ServiceError
from schemas.logs import configure_logging, stdio_log_level
from schemas.settings import Settings, get_settings


async def serve_stdio(package: ModuleType, settings: Settings) -> None:
    """Open the server's service, then serve its MCP tools on stdin/stdout until EOF."""
    async with package.open_service(settings) as service:
        await package.build_server(service).run_stdio_async()


def stdio_main(name: str, package: ModuleType) -> int:
    """Logs to stderr; a store that is down is one line and exit status 2; Ctrl-C is 130."""
    settings = get_settings()
    configure_logging(stdio_log_level(settings.log_level, "log_level" in settings.model_fields_set))
    try:
        anyio.run(serve_stdio, package, settings)
    except ServiceError as exc:
        logging.getLogger(f"mcp_servers.{name}").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
