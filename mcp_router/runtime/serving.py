"""Assemble the router from settings and serve it over stdio or HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import anyio

from mcp_router.gateway.backends import Backend, Target
from mcp_router.gateway.conformance_probes import ConformanceProbes
from mcp_router.gateway.router import Profile, Router, connected
from mcp_router.gateway.router_tools import build_router_tools
from mcp_servers.registry import SERVERS
from schemas.errors import BackendUnavailable, ConfigError
from schemas.servers import backend_target
from schemas.settings import Settings

log = logging.getLogger("neonblue.serving")


@asynccontextmanager
async def open_router(
    settings: Settings,
    *,
    targets: dict[str, Target] | None = None,
    stream_stats: Callable[[], dict[str, Any]] | None = None,
) -> AsyncIterator[Router]:
    """Open every backend (in-process unless configured remote) and connect the router.

    `targets` overrides settings.backends (tests pass a subprocess or a dead URL here).
    """
    remote = {name: backend_target(name, spec) for name, spec in settings.backends.items()}
    remote.update(targets or {})
    unknown = set(remote) - set(SERVERS)
    if unknown:
        raise ConfigError(f"NEONBLUE_BACKENDS: unknown server(s) {sorted(unknown)}; known: {sorted(SERVERS)}")
    router = Router([], profile=settings.tool_profile)
    if settings.conformance_probes:
        log.warning("serving the MCP conformance suite's diagnostic tools (NEONBLUE_CONFORMANCE_PROBES=1)")
        router.enable_probes(ConformanceProbes())
    async with AsyncExitStack() as stack:
        for name, spec in SERVERS.items():
            if name in remote:
                router.backends[name] = Backend(name, remote[name], timeout=settings.backend_timeout)
                continue
            if not spec.available():
                log.warning("server %s is not installed in this build; skipped", name)
                continue
            kwargs: dict[str, Any] = {"backends": router.backends} if spec.needs_backends else {}
            if name == "chromadb":
                kwargs["registry"] = registry_records(router.backends)  # sync_from_registry pulls from postgres
            service = await stack.enter_async_context(spec.open_service(settings, **kwargs))
            router.services[name] = service
            router.backends[name] = Backend(name, spec.build_server(service), timeout=settings.backend_timeout)
        router.backends["router"] = Backend("router", build_router_tools(router, stream_stats))
        await stack.enter_async_context(connected(router))
        yield router


def registry_records(backends: dict[str, Backend]) -> Callable[[], AsyncIterator[dict[str, Any]]]:
    """The registry's experiments, read through the router's postgres backend (in-process or remote)."""

    async def records() -> AsyncIterator[dict[str, Any]]:
        postgres = backends.get("postgres")
        if postgres is None:
            raise BackendUnavailable("sync_from_registry needs the postgres server, which this router lacks")
        offset: int | None = 0
        while offset is not None:
            page = await postgres.call("list_experiments", {"limit": 200, "offset": offset})
            for item in page["items"]:
                yield await postgres.call("get_experiment", {"experiment": item["key"]})
            offset = page["next_offset"]

    return records


@asynccontextmanager
async def open_attached_router(url: str, token: str | None, profile: Profile = "full") -> AsyncIterator[Router]:
    """A thin stdio front for a running stack: one HTTP backend, names passed through; it lists the
    tools of its own profile (it reads the stack's full list, whatever the stack's profile)."""
    router = Router([Backend("stack", url, token=token)], profile=profile)
    async with connected(router):
        yield router


def token_file(settings: Settings) -> Path:
    return settings.run_dir / "http_token"


def resolve_token(settings: Settings, *, create: bool) -> str | None:
    """The bearer token: NEONBLUE_HTTP_TOKEN, else the stack's generated one (0600 file under run/).

    An empty or whitespace-only token, from either place, is no token: it is never returned (so it
    can neither turn auth off nor be accepted); with `create`, a blank file is replaced by a fresh token.
    """
    if settings.http_token is not None and (explicit := settings.http_token.get_secret_value().strip()):
        return explicit
    path = token_file(settings)
    if path.exists() and (stored := path.read_text().strip()):
        return stored
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)  # a blank file may carry other permissions: write a fresh 0600 one
    path.touch(mode=0o600)
    path.write_text(token)
    return token


@contextmanager
def embedded_database(settings: Settings) -> Iterator[None]:
    """With DATABASE_URL unset and no stack running, start the embedded PostgreSQL for this process
    and stop it again on exit (a stack's PostgreSQL, already running, is left alone)."""
    if settings.database_url:
        yield
        return
    from mcp_router.runtime.embedded import EmbeddedPostgres, ensure_writable_dir

    ensure_writable_dir(settings.neonblue_home, "NEONBLUE_HOME")
    postgres = EmbeddedPostgres(settings.pg_data_dir, settings.embedded_pg_port)
    # A child of this process that dies with it; a left-over of a crashed serve of this home is
    # stopped first; another home's server on our port is refused (ConfigError), never connected to.
    started_here = postgres.start_for_this_process()
    try:
        yield
    finally:
        if started_here:
            postgres.stop()


class Shutdown:
    """SIGTERM and SIGINT end `serve` cleanly, so it stops what it started.

    SIGTERM's default action kills the process without running `finally` blocks (the embedded
    PostgreSQL outlived it), and SIGINT's KeyboardInterrupt lands wherever the main thread is. Here a
    signal is recorded, and the callback the event loop registered (`on_signal`) runs on that loop:
    stdio cancels its serving, HTTP lets uvicorn finish the requests in flight. While PostgreSQL
    starts or stops (no loop), the request waits for that step to end. A second SIGINT exits at
    once (the embedded PostgreSQL, a child told by the kernel, still shuts down).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[], object] | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def on_signal(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the running loop when a signal arrives; at once if one already has."""
        self._loop, self._callback = asyncio.get_running_loop(), callback
        if self.requested:
            callback()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signal is None:
            self.signal = signum
            log.info("%s: shutting down", signal.Signals(signum).name)
        elif signum == signal.SIGINT:  # Ctrl-C again: the user will not wait
            os._exit(128 + signum)
        loop, callback = self._loop, self._callback
        if loop is not None and callback is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)


@contextmanager
def signals_end_serving() -> Iterator[Shutdown]:
    shutdown = Shutdown()
    previous = {sig: signal.signal(sig, shutdown._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield shutdown
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StdinLines:
    """Lines of a pipe, socket or terminal read on the event loop.

    The MCP SDK reads stdin in a worker thread, and cancelling that read waits for the next line:
    Ctrl-C or SIGTERM left `serve` running until the client wrote or closed stdin. Waiting for
    readability on the loop instead makes cancelling immediate.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._scanned = 0  # no newline before this offset of _buffer
        self._eof = False

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        while (end := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            if self._eof:
                if not self._buffer:
                    raise StopAsyncIteration
                end = len(self._buffer) - 1  # a last line without its newline
                break
            await anyio.wait_readable(self._fd)
            chunk = os.read(self._fd, 1 << 16)  # readable: returns without blocking
            self._eof = not chunk
            self._buffer += chunk
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line.decode("utf-8", errors="replace")

    @classmethod
    def of_stdin(cls) -> _StdinLines | None:
        """For a stdin the loop can poll; None (the SDK's reader) for a file, which never blocks for long."""
        try:
            mode = os.fstat(0).st_mode
        except OSError:
            return None
        pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)
        return cls(0) if pollable and sys.platform != "win32" else None


@asynccontextmanager
async def _stdio() -> AsyncIterator[tuple[Any, Any]]:
    from mcp.server.stdio import stdio_server

    async with stdio_server(stdin=_StdinLines.of_stdin()) as streams:  # type: ignore[arg-type]
        yield streams


def run_stdio(settings: Settings, server: str | None = None) -> None:
    """Serve MCP over stdio: one server alone, the router attached to a running stack, or the router owning stores.

    It ends when stdin closes or on SIGTERM/SIGINT, and stops the PostgreSQL it started.
    """
    from mcp_router.runtime.stack import Stack

    stack = Stack(settings)
    attach = server is None and stack.owner.pid() is not None and stack.owner_healthy()
    needs_database = server in (None, "postgres", "intelligence") and not attach
    with signals_end_serving() as shutdown, (embedded_database(settings) if needs_database else nullcontext()):
        if not shutdown.requested:
            anyio.run(_stdio_main, settings, server, attach, shutdown)


async def _stdio_main(settings: Settings, server: str | None, attach: bool, shutdown: Shutdown) -> None:
    with anyio.CancelScope() as serving:
        shutdown.on_signal(serving.cancel)
        await _serve_stdio(settings, server, attach)


async def _serve_stdio(settings: Settings, server: str | None, attach: bool) -> None:
    if server is not None:
        spec = SERVERS[server]
        if spec.needs_backends:  # intelligence needs the others: a router, serving only its tools
            async with open_router(settings) as router:
                await _serve_lowlevel_stdio(router.backends[server].target._lowlevel_server)  # type: ignore[union-attr]
            return
        async with spec.open_service(settings) as service:
            await _serve_lowlevel_stdio(spec.build_server(service)._lowlevel_server)
        return
    if attach:
        from mcp_router.runtime.stack import Stack

        url = Stack(settings).owner_url
        log.info("attaching to the running stack at %s", url)
        cm = open_attached_router(f"{url}/mcp", resolve_token(settings, create=False), settings.tool_profile)
    else:
        cm = open_router(settings)
    async with cm as router, _stdio() as (read, write):
        await router.server.run(read, write, router.server.create_initialization_options())


async def _serve_lowlevel_stdio(lowlevel: Any) -> None:
    async with _stdio() as (read, write):
        await lowlevel.run(read, write, lowlevel.create_initialization_options())


def run_http(settings: Settings, server: str | None = None, with_stream: bool = False) -> None:
    """Serve the router over streamable HTTP (stateless, so replicas can sit behind one address)."""
    import uvicorn

    from mcp_router.web.http_app import build_http_app
    from mcp_router.web.rest import rest_routes

    token = resolve_token(settings, create=with_stream)
    if token is None and not settings.http_is_loopback:  # resolve_token never returns a blank token
        raise ConfigError(
            f"NEONBLUE_HTTP_TOKEN: a non-empty token is required to serve on non-loopback address {settings.http_host}"
        )
    if token is None:
        log.warning("serving HTTP on %s without a bearer token (loopback only)", settings.http_host)

    async def main(shutdown: Shutdown) -> None:
        with anyio.CancelScope() as starting:
            shutdown.on_signal(starting.cancel)  # a signal while the stores open: stop opening them
            await serve_router(shutdown)

    async def serve_router(shutdown: Shutdown) -> None:
        from stream_processor.processor import StreamStats
        from stream_processor.runner import StreamWorker

        stats = StreamStats() if with_stream else None
        worker: StreamWorker | None = None

        def stream_figures() -> dict[str, Any]:  # the processor's, and the outbox relay's once it runs
            return worker.snapshot() if worker is not None else stats.snapshot()

        async with open_router(settings, stream_stats=stream_figures if stats else None) as router:
            app = build_http_app(router, settings, token, extra_routes=rest_routes(router))
            config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port,
                                    log_level="warning", lifespan="on")
            server = uvicorn.Server(config)
            # From here a signal asks uvicorn to finish the requests in flight (uvicorn also catches
            # the signal while it serves, then raises it again: Shutdown records it, nothing dies).
            shutdown.on_signal(lambda: setattr(server, "should_exit", True))
            if not with_stream:
                await server.serve()
                return
            # The store owner also runs the stream processor and the outbox relay (the registry's
            # exposures and results on their way to the event store): they share the in-process
            # services (chDB and Chroma allow one owning process).
            from stream_processor.runner import build_stream

            worker = build_stream(settings, router.services, stats, intelligence=router.backends.get("intelligence"))
            async with anyio.create_task_group() as tg:
                async def consume() -> None:
                    try:
                        await worker.run()
                    except Exception:  # noqa: BLE001 - keep serving MCP; router_status shows the stream stalled
                        log.exception("stream processor stopped")

                tg.start_soon(consume)
                await server.serve()  # returns on SIGTERM/SIGINT (uvicorn handles the signal)
                worker.stop()  # the relay's batch in flight, then the processor's: commit, leave the group

    if server is not None:
        raise ConfigError("serve --http serves the router; run a single server over stdio instead")
    # `up` started PostgreSQL already for the owner; standalone, this process does, and stops it.
    with signals_end_serving() as shutdown, embedded_database(settings):
        if not shutdown.requested:
            anyio.run(main, shutdown)
