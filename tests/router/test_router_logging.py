"""schemas.logs: records reach stderr in one format, in order, none lost at exit, WARNINGs without waiting
for a batch; the calling thread only appends (the router logs every tool call at INFO)."""

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
    for i in range(1000):
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
