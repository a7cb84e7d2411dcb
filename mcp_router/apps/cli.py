"""The `neonblue` command.

Human-facing commands print to stdout; `neonblue serve` over stdio never does
(stdout is the MCP protocol channel), it logs to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from schemas.errors import ConfigError
from schemas.logs import configure_logging, stdio_log_level
from schemas.servers import SERVER_NAMES
from schemas.settings import Settings


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]).upper() or "settings"
        raise ConfigError(f"{name}: {first['msg']}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """NeonBlue: an MCP server suite for running experiments with LLM agents."""


@cli.command()
def up() -> None:
    """Start the embedded stack (PostgreSQL, Kafka broker, router owning chDB + Chroma)."""
    settings = load_settings()
    configure_logging("WARNING")
    from mcp_router.runtime.stack import Stack

    _print_status(Stack(settings).up())


@cli.command()
@click.option("--force", is_flag=True, help="Stop even if the embedded broker holds events not consumed yet (drops them).")
@click.option("--wait", "stall", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Give up draining when the lag has not shrunk for this many seconds.")
def down(force: bool, stall: float) -> None:
    """Stop what `neonblue up` started.

    The embedded broker keeps events in memory: first the stream processor consumes and commits
    everything it holds (with progress), dead letters are saved to NEONBLUE_HOME/dlq, and `down`
    refuses to drop unconsumed events unless --force.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mcp_router.runtime.stack import Stack, UnconsumedEvents

    stack = Stack(load_settings())
    err = Console(stderr=True)
    bar = Progress(TextColumn("draining the stream"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    task = None
    drained = 0

    def progress(done: int, total: int) -> None:
        nonlocal task, drained
        if task is None:
            bar.start()
            task = bar.add_task("drain", total=total)
        bar.update(task, completed=done, total=total)
        drained = done

    try:
        parts = stack.down(force=force, progress=progress, stall=stall,
                           note=lambda line: err.print(line, highlight=False, soft_wrap=True))
    except UnconsumedEvents as exc:
        bar.stop()
        click.echo(f"neonblue: {exc}", err=True)
        sys.exit(1)
    bar.stop()
    if drained:
        err.print(f"the stream processor stored {drained:,} more events before the broker stopped",
                  highlight=False, soft_wrap=True)
    _print_status(parts)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show each part of the stack: up/down, address, data dir."""
    from dataclasses import replace

    from mcp_router.runtime.stack import Stack

    settings = load_settings()
    stack = Stack(settings)
    parts = stack.status()
    # True lag, from the broker: end offsets minus the group's commits on every partition of the topics.
    kafka = next((p for p in parts if p.name == "kafka"), None)
    lag = stack.lag() if kafka is not None and kafka.running else None
    if lag is not None:
        detail = f"lag {lag.total:,} (group {lag.group})"
        parts = [replace(p, detail="; ".join(filter(None, (p.detail, detail)))) if p is kafka else p for p in parts]
    stream = _stream_figures(settings) if stack.owner_healthy() else None
    # Exposures and results recorded in the registry, not yet relayed to the event store.
    postgres = next((p for p in parts if p.name == "postgres"), None)
    outbox = stack.outbox_backlog() if postgres is not None and postgres.running else None
    if as_json:
        # The stream processor runs in the store owner: its figures go on that row (None when it does not answer).
        rows = [p.__dict__ | ({"lag": lag.as_dict() if lag else None} if p.name == "kafka" else {})
                | ({"outbox": outbox} if p.name == "postgres" else {})
                | ({"stream": stream} if p.name == OWNER else {}) for p in parts]
        click.echo(json.dumps(rows, indent=2))
    else:
        notes: dict[str, list[tuple[str, str]]] = {}
        if stream:
            shown = f"{lag.total:,}" if lag is not None else "unknown"
            notes[OWNER] = [("stream", f"{stream['consumed']:,} consumed, {stream['dead_lettered']:,} dead-lettered, "
                                       f"{stream['events_per_s_10s']:,.0f} events/s (10 s), lag {shown}, "
                                       f"batch p50 {stream['batch_ms_p50']} ms, retries {stream['retries']}")]
        if outbox is not None:
            notes["postgres"] = [("outbox", _outbox_line(outbox, (stream or {}).get("outbox_relay"))
                                  .removeprefix("outbox: "))]
        _print_status(parts, notes)


def _outbox_line(outbox: dict, relay: dict | None) -> str:
    """One line: what waits in the event outbox, and what the owner's relay has done."""
    line = f"outbox: {outbox['unsent']:,} waiting"
    if outbox["unsent"]:
        line += f" (oldest {outbox['oldest_age_s']:,.1f} s)"
        if outbox["last_error"]:
            line += f", last error: {outbox['last_error']}"
    if relay is not None:
        line += f"; relay: {relay['relayed']:,} sent, {relay['retries']} retries"
    elif outbox["unsent"]:
        line += "; no relay runs (it runs with the stream processor: `neonblue up` or `neonblue stream`)"
    return line


def _stream_figures(settings: Settings) -> dict | None:
    """The running stack's stream-processor figures, read through router_status like any client."""
    import anyio
    import httpx
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from mcp_router.runtime.serving import resolve_token
    from mcp_router.runtime.stack import Stack

    async def read() -> dict | None:
        token = resolve_token(settings, create=False)
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)
        async with http, Client(streamable_http_client(f"{Stack(settings).owner_url}/mcp", http_client=http)) as c:
            return (await c.call_tool("router_status", {})).structured_content.get("stream")

    try:
        return anyio.run(read)
    except Exception:  # noqa: BLE001 - status must still print the parts
        return None


OWNER = "router+stores"  # the part that runs the stream processor (runtime.stack names it)


def _print_status(parts: list, notes: dict[str, list[tuple[str, str]]] | None = None) -> None:
    """One block per part: its name, state and address, then its data directory, detail and `notes`
    (label, text) one per line. Long values fold at the terminal's width: nothing is cut."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for i, part in enumerate(parts):
        if i:
            table.add_row("", "")
        state = "[green]up[/green]" if part.running else "[red]down[/red]"
        table.add_row(f"[bold]{escape(part.name)}[/bold]", f"{state}  {escape(part.address)}")
        rows = [("data", part.data_dir), ("detail", part.detail), *(notes or {}).get(part.name, [])]
        for label, text in rows:
            if text:
                table.add_row(f"  {label}", escape(text))
    Console(highlight=False).print(table)


def profile_option(command: click.decorators.FC) -> click.decorators.FC:
    """`--profile core|full`: this command's NEONBLUE_TOOL_PROFILE (which load_settings then reads)."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        import os

        if value:
            os.environ["NEONBLUE_TOOL_PROFILE"] = value

    return click.option(
        "--profile", type=click.Choice(["core", "full"]), default=None, expose_value=False, is_eager=True,
        callback=remember, help="Tools the router lists: core (a dozen for the experiment journey + find_tools, "
        "which finds the others by meaning) or full (default: NEONBLUE_TOOL_PROFILE, else full). Every tool stays "
        "callable by name.")(command)


@cli.command()
@profile_option
@click.argument("server", required=False, type=click.Choice(SERVER_NAMES))
@click.option("--http", "use_http", is_flag=True, help="Serve streamable HTTP instead of stdio.")
@click.option("--host", default=None, help="HTTP host (default NEONBLUE_HTTP_HOST).")
@click.option("--port", default=None, type=int, help="HTTP port (default NEONBLUE_HTTP_PORT).")
@click.option("--owner", is_flag=True, hidden=True, help="Run as the stack's store owner (used by `up`).")
@click.option("--verbose", "-v", is_flag=True,
              help="Log at INFO on stderr (each tool call, each request to the stack). Over stdio the default is "
              "WARNING unless NEONBLUE_LOG_LEVEL is set.")
def serve(server: str | None, use_http: bool, host: str | None, port: int | None, owner: bool,
          verbose: bool) -> None:
    """Serve the router (all servers) or one SERVER, over stdio (default) or HTTP."""
    settings = load_settings()
    overrides = {k: v for k, v in {"http_host": host, "http_port": port}.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    # Over stdio, stderr is the MCP client's log: quiet (WARNING) unless a level is set or --verbose.
    chosen = use_http or "log_level" in settings.model_fields_set
    configure_logging(stdio_log_level(settings.log_level, chosen, verbose))
    from mcp_router.runtime import serving

    if use_http:
        serving.run_http(settings, server=server, with_stream=owner)
    else:
        serving.run_stdio(settings, server=server)


@cli.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def schema(output: Path | None) -> None:
    """Print (or write) the JSON Schema of Kafka events for producers."""
    from schemas.events import event_json_schema

    text = json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
    if output:
        output.write_text(text)
    else:
        click.echo(text, nl=False)


@cli.command("claude-config")
@profile_option
def claude_config() -> None:
    """Print a claude_desktop_config.json entry for this install."""
    settings = load_settings()
    executable = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "neonblue" else None
    command = str(executable) if executable and executable.exists() else sys.executable
    args = ["serve"] if executable else ["-m", "mcp_router", "serve"]
    env = {**stack_locating_env(settings), "HF_HUB_OFFLINE": "1"}
    if settings.tool_profile != "full":
        env["NEONBLUE_TOOL_PROFILE"] = settings.tool_profile
    if settings.http_token is not None:
        # Set explicitly (environment or .env), the stack serves this token and no run/http_token file
        # exists, so the spawned `serve` needs it to attach. A generated token is never copied: `serve`
        # reads it from NEONBLUE_HOME/run/http_token (0600) at start.
        env["NEONBLUE_HTTP_TOKEN"] = settings.http_token.get_secret_value()
        click.echo("neonblue: the entry carries NEONBLUE_HTTP_TOKEN (set in your environment): keep the config "
                   "file private", err=True)
    click.echo(json.dumps({"mcpServers": {"neonblue": {"command": command, "args": args, "env": env}}}, indent=2))


def stack_locating_env(settings: Settings) -> dict[str, str]:
    """Every setting that says where this stack lives, as environment variables: the data directory,
    the ports of its parts, and the store URLs and backends when set. A process started elsewhere
    (Claude Desktop spawns `serve` in its own working directory, without this shell's environment or
    .env) with these finds the same stack, not whatever runs on the default ports."""
    env = {
        "NEONBLUE_HOME": str(settings.neonblue_home),
        "NEONBLUE_HTTP_HOST": settings.http_host,
        "NEONBLUE_HTTP_PORT": str(settings.http_port),
        "NEONBLUE_PG_PORT": str(settings.embedded_pg_port),
        "NEONBLUE_KAFKA_PORT": str(settings.embedded_kafka_port),
    }
    optional = {
        "DATABASE_URL": settings.database_url,
        "CLICKHOUSE_URL": settings.clickhouse_url,
        "CHROMA_URL": settings.chroma_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CLICKHOUSE_DATABASE": settings.clickhouse_database if "clickhouse_database" in settings.model_fields_set
        else None,
        "NEONBLUE_BACKENDS": json.dumps(settings.backends) if settings.backends else None,
    }
    env.update({name: value for name, value in optional.items() if value})
    return env


@cli.command()
@click.option("--scale", default=1.0, show_default=True, help="Multiply the simulated users (0.1 for a quick run).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Where the plots go.")
def demo(scale: float, output: Path) -> None:
    """The main job: a portfolio with known effects, streamed, analysed and checked through the router."""
    settings = load_settings()
    configure_logging("WARNING")
    from mcp_router.apps.demo import run_demo

    report = run_demo(settings, scale=scale, output=output)
    if not all(report.matches.values()):
        sys.exit(1)


# ---------------------------------------------------------------- agent chat (issue 10)


def _chat_options(func):
    """Options shared by `chat` and `ask`."""
    options = [
        click.option("--model", default=None, help="Claude model (default ANTHROPIC_MODEL)."),
        click.option("--offline", is_flag=True, help="Answer with route_query rules, no LLM (the default without ANTHROPIC_API_KEY)."),
        click.option("--read-only", is_flag=True, help="Let the model call only tools annotated read-only."),
        click.option("--max-tool-rounds", default=8, show_default=True, type=click.IntRange(0, 50),
                     help="Rounds of tool calls per question before Claude must answer."),
        click.option("--max-total-tokens", default=200_000, show_default=True, type=click.IntRange(1000),
                     help="Input + output tokens per question."),
        click.option("--max-tokens", default=2048, show_default=True, type=click.IntRange(1, 64_000),
                     help="max_tokens of each response."),
        click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 10),
                     help="Retries on 429 rate limit / 529 overload / 5xx (with backoff)."),
        click.option("--experiment", default=None,
                     help="A prompt/model experiment (key) that picks the system prompt and model per user "
                          "and receives latency, tokens and resolution as results."),
        click.option("--user", "user_id", default=None, help="User id for --experiment (default: your login)."),
        click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE",
                     help="User attribute for the experiment's targeting (repeatable)."),
        click.option("--server", "server_url", default=None, metavar="URL",
                     help="Use a running NeonBlue at this /mcp URL (bearer token: NEONBLUE_HTTP_TOKEN) "
                          "instead of opening the stores here."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _build_chat_options(model, offline, read_only, max_tool_rounds, max_total_tokens, max_tokens, retries,
                        experiment, user_id, attrs, server_url):
    from mcp_router.apps.chat import ChatLimits, ChatOptions

    attributes = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--attr")
        attributes[key] = value
    return ChatOptions(model=model, offline=offline, read_only=read_only, max_retries=retries,
                       limits=ChatLimits(max_tool_rounds=max_tool_rounds, max_total_tokens=max_total_tokens,
                                         max_response_tokens=max_tokens),
                       experiment=experiment, user_id=user_id, attributes=attributes or None,
                       server_url=server_url)


def _run_chat_command(main):
    """Run a chat coroutine; a setup error (unknown experiment, store down) is one line and exit 2,
    also when the MCP client's task groups wrap it in an exception group."""
    import anyio

    from mcp_router.apps.chat import ChatSetupError
    from schemas.errors import ServiceError

    def setup_error(exc: BaseException) -> BaseException | None:
        if isinstance(exc, ChatSetupError | ServiceError):
            return exc
        for inner in getattr(exc, "exceptions", ()):
            if (found := setup_error(inner)) is not None:
                return found
        return None

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        click.echo("", err=True)
        sys.exit(130)
    except BaseException as exc:
        found = setup_error(exc)
        if found is None:
            raise
        click.echo(f"neonblue: {found}", err=True)
        sys.exit(2)


@cli.command()
@_chat_options
def chat(**kwargs) -> None:
    """Interactive chat: Claude answers with NeonBlue's tools (offline rules without ANTHROPIC_API_KEY)."""
    import anyio

    from mcp_router.apps.chat import run_chat

    settings = load_settings()
    configure_logging("WARNING")
    options = _build_chat_options(**kwargs)

    async def read_line(prompt: str) -> str | None:
        def read() -> str | None:
            try:
                return input(prompt)
            except EOFError:
                return None

        return await anyio.to_thread.run_sync(read)

    _run_chat_command(lambda: run_chat(settings, options, read_line))


@cli.command()
@click.argument("question", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {mode, answer, tool_calls, usage, ...}.")
@_chat_options
def ask(question: tuple[str, ...], as_json: bool, **kwargs) -> None:
    """Answer one QUESTION (exit status 1 when the answer failed)."""
    from mcp_router.apps.chat import run_ask

    settings = load_settings()
    configure_logging("WARNING")
    options = _build_chat_options(**kwargs)
    turn = _run_chat_command(lambda: run_ask(settings, " ".join(question), options, as_json=as_json))
    if turn.error:
        sys.exit(1)  # the reason is already printed: one line on the terminal, or the JSON's "error"


@cli.command()
def stream() -> None:
    """Run one stream-processor member of the consumer group (scale out by running more)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    import asyncio

    from mcp_router.runtime.stream_main import run_standalone

    asyncio.run(run_standalone(settings))


@cli.command()
@click.option("--experiment", "experiment_key", required=True, help="Registry key of a running experiment.")
@click.option("--users", default=10_000, show_default=True, help="Users to simulate.")
@click.option("--rate", default=None, type=float, help="Target events/s (default: as fast as possible).")
@click.option("--truth", "truths", multiple=True, metavar="VARIANT=RATE[:REVENUE]", required=True,
              help="True conversion rate (and revenue per conversion) of a variant; repeat per variant.")
@click.option("--days", default=14, show_default=True)
@click.option("--seed", default=0, show_default=True)
def generate(experiment_key: str, users: int, rate: float | None, truths: tuple[str, ...], days: int, seed: int) -> None:
    """Stream synthetic traffic with known true effects for an experiment into Kafka."""
    settings = load_settings()
    configure_logging("WARNING")
    import asyncio
    import logging
    from datetime import UTC, datetime, timedelta

    from mcp_servers.postgres import open_service as open_postgres
    from mcp_servers.postgres.service import assignment_spec
    from stream_processor.generator import ArmTruth, ProduceFailed, TrafficPlan, generate_events, produce

    # A broker that goes away makes aiokafka log every reconnect: the outcome is one line below instead.
    for noisy in ("aiokafka", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    parsed: dict[str, ArmTruth] = {}
    for item in truths:
        variant, _, spec = item.partition("=")
        rate_s, _, revenue = spec.partition(":")
        try:
            parsed[variant] = ArmTruth(float(rate_s), float(revenue or 0))
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected VARIANT=RATE[:REVENUE]", param_hint="--truth") from None

    async def main() -> int:
        async with open_postgres(settings) as registry:
            experiment = await registry.get_experiment(experiment_key)
        keys = [v.key for v in experiment.variants]
        missing = set(keys) - set(parsed)
        if missing:
            raise click.BadParameter(f"no --truth for variant(s) {sorted(missing)}", param_hint="--truth")
        start = datetime.now(UTC) - timedelta(days=days)
        plan = TrafficPlan(experiment.key, keys, assignment_spec(experiment), parsed, users, start, days, seed)
        return await produce(settings.effective_kafka_bootstrap, generate_events(plan), rate=rate)

    try:
        sent = asyncio.run(main())
    except ProduceFailed as exc:
        click.echo(f"neonblue: generate: {exc}", err=True)
        sys.exit(1)
    click.echo(f"produced {sent} events for {experiment_key}")


@cli.command("sync-memory")
def sync_memory() -> None:
    """Backfill Chroma's experiment memory from the registry (the seeds' migrate_to_chromadb)."""
    settings = load_settings()
    configure_logging("WARNING")
    import anyio

    from mcp_router.runtime.serving import open_router, registry_records
    from mcp_router.runtime.stack import Stack

    if Stack(settings).owner.pid() is not None:
        raise ConfigError("NEONBLUE_HOME: a running stack owns Chroma; call the sync_from_registry tool through it")

    async def run() -> dict:
        async with open_router(settings) as router:
            chroma = router.services["chromadb"]
            report = await chroma.sync_from_registry(registry_records(router.backends)(), progress=True)
            return report.model_dump(exclude={"failed"})

    click.echo(json.dumps(anyio.run(run), indent=2, default=str))


# ---------------------------------------------------------------- tools from CI (issue 25): apps/call.py, apps/gate.py

from mcp_router.apps import call as _call  # noqa: E402 - light: their help holds the exit-code table
from mcp_router.apps import gate as _gate  # noqa: E402


@cli.command("call", help=_call.CALL_HELP, no_args_is_help=True,
             short_help="Call one tool over stdio: JSON out, exit code by error kind.")
@click.argument("tool", required=False)
@click.argument("args", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default=None,
              help="The result as JSON (default) or a readable table; with --list, JSON instead of lines.")
@click.option("--list", "list_tools", is_flag=True, help="Print the tool catalogue, one line per tool.")
@click.option("--verbose", "-v", is_flag=True, help="The server's log (serve --verbose) on stderr.")
def call_command(tool: str | None, args: tuple[str, ...], fmt: str, list_tools: bool, verbose: bool) -> None:
    sys.exit(_call.run_call(tool, args, fmt=fmt, list_tools=list_tools, verbose=verbose))


@cli.command("gate", help=_gate.GATE_HELP, short_help="CI release gate on an experiment's verdict and guardrails.")
@click.argument("experiment")
@click.option("--allow", default="ship", show_default=True, metavar="VERDICT[,VERDICT]",
              help="Verdicts that pass: ship, roll_back, keep_running, needs_review.")
@click.option("--environment", type=click.Choice(["production", "staging", "development"]), default=None,
              help="Whose policy (tolerance, minimum data) to apply (default: the ENVIRONMENT setting).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write a JUnit XML report (one testsuite; a testcase per check).")
@click.option("--verbose", "-v", is_flag=True, help="The server's log (serve --verbose) on stderr.")
def gate_command(experiment: str, allow: str, environment: str | None, junit: Path | None, verbose: bool) -> None:
    sys.exit(_gate.run_gate(experiment, allow, environment or load_settings().environment, junit, verbose))


def main() -> None:
    from schemas.errors import ServiceError

    try:
        cli.main(standalone_mode=True)
    except (ConfigError, ServiceError) as exc:  # bad configuration or a store that is down: one line
        click.echo(f"neonblue: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
