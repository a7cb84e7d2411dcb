"""How every NeonBlue process logs: to stderr, in one format, off the calling thread.

Every entry point (the `neonblue` CLI, `python -m mcp_servers.<name>`, the bench scripts)
calls `configure_logging(level)` once at start; modules only `logging.getLogger(__name__)`.
stderr because stdout is the MCP stdio protocol channel. A QueueHandler keeps formatting
and the write off the request path (the router logs every tool call); a listener thread
does them.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _DeferredQueueHandler(QueueHandler):
    """Enqueue the record as is: the listener thread formats it (QueueHandler formats in the caller)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure_logging(level: str) -> None:
    """Send the root logger's records at `level` (a name: "INFO", "WARNING"…) and above to stderr.

    Replaces the root handlers, so a second call (a second command in one process) writes to
    the stderr of that moment.
    """
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, stream, respect_handler_level=False)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [_DeferredQueueHandler(records)]
    root.setLevel(getattr(logging, level, logging.INFO))


def stdio_log_level(level: str, chosen: bool, verbose: bool = False) -> str:
    """The level of a server speaking MCP over stdio. Its stderr is the client's log (Claude Desktop keeps
    one per server, CI prints it), so it is WARNING unless a level was chosen (`chosen`: NEONBLUE_LOG_LEVEL
    or LOG_LEVEL is set) or `verbose` (--verbose: INFO, or DEBUG when that was chosen)."""
    if verbose:
        return "DEBUG" if level == "DEBUG" else "INFO"
    return level if chosen else "WARNING"
