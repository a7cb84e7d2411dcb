"""schemas.logs: records reach stderr in one format, in order, none lost at exit, WARNINGs without waiting
for a batch; the calling thread only appends (the router logs every tool call at INFO, with log_per_call)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent("""
    import logging, sys, threading
    from schemas.logs import configure_logging
    configure_logging("INFO")
    log = logging.getLogger("neonblue.router")
    log.debug("hidden")
    from schemas.logs import log_per_call
    for i in range(1000):  # half made by the writer thread (log_per_call), in one order with the others
        if i % 2:
            log_per_call(log, logging.INFO, "tool=%s call=%d", ("classify_event", i), "main", "<string>")
        else:
            log.info("tool=%s call=%d", "classify_event", i)
    log.warning("backend %s is down", "chroma")
    print("ready", flush=True)
    sys.stdin.readline()  # the parent reads stderr while we wait
    threading.Thread(target=log.info, args=("from a thread",)).start()
    log.error("boom", exc_info=ValueError("bad value"))
""")


def test_every_record_reaches_stderr_in_order_and_formatted():
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # Written while the process runs (a WARNING wakes the writer): no exit needed to see it.
        seen = []
        while not seen or "WARNING" not in seen[-1]:
            line = proc.stderr.readline()
            assert line, "stderr closed before the WARNING arrived"
            seen.append(line)
        out, err = proc.communicate("go\n", timeout=30)
    finally:
        proc.kill()
    lines = seen + err.splitlines(keepends=True)
    infos = [line for line in lines if " INFO neonblue.router: tool=classify_event call=" in line]
    assert [int(line.rsplit("=", 1)[1]) for line in infos] == list(range(1000))
    assert not any("hidden" in line for line in lines)
    assert seen[-1].rstrip().endswith("WARNING neonblue.router: backend chroma is down")
    assert any(line.rstrip().endswith("INFO neonblue.router: from a thread") for line in lines)
    text = "".join(lines)
    assert "ERROR neonblue.router: boom" in text and "ValueError: bad value" in text
    assert proc.returncode == 0


async def test_the_router_logs_one_line_per_call_at_info(caplog):
    import logging
    import threading

    from mcp import Client

    from mcp_router.gateway.backends import Backend
    from mcp_router.gateway.router import Router, connected
    from mcp_router.gateway.router_tools import build_router_tools

    router = Router([])
    router.backends["router"] = Backend("router", build_router_tools(router))
    event = {"event": {"event_id": "e1", "event_type": "conversion", "timestamp": "2026-11-01T10:00:00Z",
                       "user_id": "u1", "experiment_id": "checkout-1step"}}
    async with connected(router), Client(router.server) as client:
        with caplog.at_level(logging.INFO, logger="neonblue.router"):
            for _ in range(3):
                await client.call_tool("classify_event", event)
        with caplog.at_level(logging.WARNING, logger="neonblue.router"):
            await client.call_tool("classify_event", event)
    calls = [r for r in caplog.records if r.name == "neonblue.router" and r.getMessage().startswith("tool=")]
    assert len(calls) == 3
    for record in calls:
        assert record.levelno == logging.INFO and record.funcName == "call_tool"
        assert record.getMessage().startswith("tool=classify_event backend=router outcome=ok duration_ms=")
        assert record.threadName == threading.current_thread().name and record.created > 0
    assert calls[0].created <= calls[1].created <= calls[2].created


def test_the_writer_formats_plain_records_exactly_like_the_formatter():
    import io
    import logging

    from schemas.logs import FORMAT, BatchingStderrHandler, quick_record

    handler = BatchingStderrHandler(io.StringIO())
    handler.setFormatter(logging.Formatter(FORMAT))
    log = logging.getLogger("neonblue.router")
    try:
        records = [quick_record(log, logging.INFO, "tool=%s duration_ms=%.2f", ("t", 0.5), "call_tool", __file__),
                   log.makeRecord(log.name, logging.WARNING, __file__, 1, "backend %s down: 100%% sure", ("x",), None),
                   log.makeRecord(log.name, logging.ERROR, __file__, 1, "failed", (), (ValueError, ValueError("v"), None))]
        for created in (1_700_000_000.9994, 1_700_000_001.0):
            for record in records:
                record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
                assert handler.line(record) == logging.Formatter(FORMAT).format(record)
    finally:
        handler.close()
