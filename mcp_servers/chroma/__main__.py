"""`python -m mcp_servers.chroma`: the Chroma server alone over stdio (`neonblue serve chromadb`).

    python -m mcp_servers.chroma                  # MCP over stdio
    python -m mcp_servers.chroma sync FILE        # backfill experiments from a JSON list / JSON-lines
                                                  # file ('-' = stdin), with a progress bar on stderr
    python -m mcp_servers.chroma stats            # collection counts and settings as JSON

Reads CHROMA_URL (unset: a PersistentClient under NEONBLUE_HOME/chroma) and
EMBEDDING_PROVIDER. Logs go to stderr; in server mode stdout carries the MCP protocol only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import anyio

from mcp_servers import chroma
from mcp_servers.stdio import serve_stdio
from schemas.errors import ServiceError
from schemas.logs import configure_logging, stdio_log_level
from schemas.settings import get_settings

from . import open_service


def _read_records(source: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def sync(source: str) -> None:
    records = _read_records(source)
    async with open_service(get_settings()) as service:
        report = await service.sync_from_registry(records, progress=True)
    sys.stdout.write(report.model_dump_json(indent=2) + "\n")


async def stats() -> None:
    async with open_service(get_settings(), warm_up=False) as service:
        result = await service.collection_stats()
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_servers.chroma", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sync_parser = sub.add_parser("sync", help="backfill experiments from a JSON / JSON-lines file ('-' = stdin)")
    sync_parser.add_argument("source")
    sub.add_parser("stats", help="print collection counts and settings")
    args = parser.parse_args(argv)

    settings = get_settings()
    chosen = "log_level" in settings.model_fields_set
    configure_logging(settings.log_level if args.command else stdio_log_level(settings.log_level, chosen))
    try:
        if args.command == "sync":
            anyio.run(sync, args.source)
        elif args.command == "stats":
            anyio.run(stats)
        else:
            anyio.run(serve_stdio, chroma, settings)
    except ServiceError as exc:
        logging.getLogger("mcp_servers.chroma").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
