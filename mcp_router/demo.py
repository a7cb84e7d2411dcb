"""`neonblue demo`: start the embedded stack and talk to it the way an agent does.

(The full portfolio demo lands with issue 12; this runs the real stack and a
real MCP stdio client, listing the catalogue and each backend's health.)
"""

from __future__ import annotations

import sys

import anyio
from mcp import Client, StdioServerParameters
from rich.console import Console
from rich.table import Table

from mcp_router.stack import Stack
from schemas.settings import Settings


def run_demo(settings: Settings) -> None:
    console = Console()
    console.rule("[bold]NeonBlue demo")
    console.print("Starting the embedded stack (PostgreSQL, Kafka broker, router owning chDB + Chroma)…")
    for part in Stack(settings).up():
        console.print(f"  {part.name:<14} {'up' if part.running else 'DOWN'}  {part.address}")

    async def talk() -> None:
        params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_router", "serve"])
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
            table = Table("tool", "read-only", "description", title=f"{len(tools)} tools through one router")
            for tool in sorted(tools, key=lambda t: t.name):
                ro = tool.annotations.read_only_hint if tool.annotations else None
                table.add_row(tool.name, "yes" if ro else "no", (tool.description or "").split("\n")[0][:80])
            console.print(table)
            status = await client.call_tool("router_status", {})
            health = Table("backend", "kind", "healthy", "tools", title="router_status")
            for b in status.structured_content["backends"]:
                health.add_row(b["name"], b["kind"], str(b["healthy"]), str(b["tools"]))
            console.print(health)

    anyio.run(talk)
    console.print("Stop the stack with [bold]neonblue down[/bold]; connect Claude Desktop with "
                  "[bold]neonblue claude-config[/bold].")
