"""How every NeonBlue process logs: to stderr, in one format, off the calling thread.

Every entry point (the `neonblue` CLI, `python -m mcp_servers.<name>`, the bench scripts)
calls `configure_logging(level)` once at start; modules only `logging.getLogger(__name__)`.
stderr because stdout is the MCP stdio protocol channel.

The router logs one INFO line per tool call, so a record costs the calling thread one deque
append: a writer thread formats and writes the records in batches, waking every
FLUSH_INTERVAL seconds, as soon as BATCH records wait, or at once for a WARNING or worse.
Waking a thread per record (as a QueueHandler/QueueListener pair does) cost each routed call
more than the rest of the router's work (GIL hand-offs; bench/bench_router.py). INFO lines so
reach stderr up to FLUSH_INTERVAL late; the rest is written at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FLUSH_INTERVAL = 0.05  # seconds an INFO line may wait before it is written
BATCH = 256  # records waiting that wake the writer early


class BatchingStderrHandler(logging.Handler):
    """Collects records without a lock or a wake-up; a writer thread formats and writes them in batches."""

    def __init__(self, stream: TextIO, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.stream = stream
        self._records: deque[logging.LogRecord] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._second = -1  # the whole second `_stamp` formats (the writer formats every record of a second once)
        self._stamp = ""
        self._writer = threading.Thread(target=self._run, name="neonblue-log-writer", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: deque.append is thread-safe
        if self.filters and not self.filter(record):
            return False
        self._records.append(record)
        if record.levelno >= logging.WARNING or len(self._records) >= BATCH:
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def defer(self, line: _Deferred) -> None:
        """Queue a record not made yet (see `log_per_call`): the writer thread makes it."""
        self._records.append(line)
        if line[2] >= logging.WARNING or len(self._records) >= BATCH:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every record waiting now (any thread may call it; the writer does it in its loop)."""
        lines = []
        while self._records:
            record = self._records.popleft()
            if type(record) is tuple:
                record = _made(record)
            try:
                lines.append(self.line(record))
            except Exception:  # noqa: BLE001 - a bad record is reported like logging does, never raised
                self.handleError(record)
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: nothing left to tell
                pass

    def line(self, record: logging.LogRecord) -> str:
        """`self.format(record)`, faster for a plain record in FORMAT: the date and time are formatted once a
        second (the writer thread holds the GIL while it formats, so its work delays the calling threads)."""
        formatter = self.formatter
        if (record.exc_info or record.exc_text or record.stack_info or formatter is None
                or formatter._fmt != FORMAT or type(formatter) is not logging.Formatter
                or formatter.datefmt is not None):
            return self.format(record)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(formatter.default_time_format, formatter.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}: {record.getMessage()}"

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._writer.is_alive() and threading.current_thread() is not self._writer:
            self._writer.join(timeout=1.0)
        self.flush()
        super().close()


def quick_record(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...], func: str,
                 pathname: str, lineno: int = 0) -> logging.LogRecord:
    """The LogRecord `logger.makeRecord` would make, at a fraction of its cost, for a line logged on every
    request (the router's per-call line): a copy of a template made once per call site, with the time,
    message and thread filled in. `logger.handle(quick_record(...))` logs it; no caller lookup either."""
    key = (logger.name, level, pathname, lineno, func)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = logger.makeRecord(logger.name, level, pathname, lineno, msg, (), None, func).__dict__
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(template)
    now = time.time()
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0
    fields["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
    fields["msg"] = msg
    fields["args"] = args
    thread = threading.current_thread()
    fields["thread"], fields["threadName"] = thread.ident, thread.name
    fields["process"] = os.getpid()
    return record


_TEMPLATES: dict[tuple[str, int, str, int, str], dict[str, Any]] = {}

# A record to make later: created, logger, level, msg, args, func, pathname, lineno, thread id, thread name.
_Deferred = tuple[float, logging.Logger, int, str, tuple[Any, ...], str, str, int, int | None, str]


def log_per_call(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...], func: str, pathname: str,
                 lineno: int = 0) -> None:
    """Log a line written on every request (the router's per-call line), the caller having checked
    `logger.isEnabledFor(level)`. When the record could only reach the handler `configure_logging`
    installed (no other handler or filter on the way: the usual case), the calling thread queues a tuple
    and the writer thread makes the LogRecord; otherwise (a test's caplog, another handler) it is
    logged as any record, made by `quick_record`."""
    handler = _only_handler(logger, level)
    if handler is None:
        logger.handle(quick_record(logger, level, msg, args, func, pathname, lineno))
        return
    thread = threading.current_thread()
    handler.defer((time.time(), logger, level, msg, args, func, pathname, lineno, thread.ident, thread.name))


def _only_handler(logger: logging.Logger, level: int) -> BatchingStderrHandler | None:
    root = logging.root
    if len(root.handlers) != 1 or root.filters or root.disabled:
        return None
    handler = root.handlers[0]
    if type(handler) is not BatchingStderrHandler or handler.filters or level < handler.level:
        return None
    node: Any = logger
    while node is not root:
        if node is None or node.handlers or node.filters or not node.propagate or node.disabled:
            return None
        node = node.parent
    return handler


def _made(deferred: _Deferred) -> logging.LogRecord:
    created, logger, level, msg, args, func, pathname, lineno, thread_id, thread_name = deferred
    record = quick_record(logger, level, msg, args, func, pathname, lineno)
    fields = record.__dict__
    fields["created"] = created
    fields["msecs"] = int((created - int(created)) * 1000) + 0.0
    fields["relativeCreated"] = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
    fields["thread"], fields["threadName"] = thread_id, thread_name
    return record


def configure_logging(level: str) -> None:
    """Send the root logger's records at `level` (a name: "INFO", "WARNING"…) and above to stderr.

    Replaces the root handlers, so a second call (a second command in one process) writes to
    the stderr of that moment.
    """
    handler = BatchingStderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    atexit.register(handler.close)
    root = logging.getLogger()
    for previous in root.handlers:
        if isinstance(previous, BatchingStderrHandler):
            previous.close()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level, logging.INFO))


def stdio_log_level(level: str, chosen: bool, verbose: bool = False) -> str:
    """The level of a server speaking MCP over stdio. Its stderr is the client's log (Claude Desktop keeps
    one per server, CI prints it), so it is WARNING unless a level was chosen (`chosen`: NEONBLUE_LOG_LEVEL
    or LOG_LEVEL is set) or `verbose` (--verbose: INFO, or DEBUG when that was chosen)."""
    if verbose:
        return "DEBUG" if level == "DEBUG" else "INFO"
    return level if chosen else "WARNING"
