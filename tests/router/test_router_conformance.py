"""The official MCP conformance suite, pinned by the Makefile, runs the 2026-07-28 requirement set
against `neonblue serve --http`: every scenario a product server can pass with its own tools passes.

A scenario is product-applicable when a real server can pass it with what it serves anyway (its
tools, prompts and resources, the protocol itself) or with the router's opt-in conformance probes
(NEONBLUE_CONFORMANCE_PROBES=1: `test_missing_capability`, `test_streaming_elicitation`,
`test_logging_tool`, prompt `test_input_required_result_prompt`). The others were written for the
SDK's fixture server: they call its `test_*` tools and prompts or read its `test://` resources.
The two lists together are exactly the requirement file's `server:` list, so a new suite version
cannot add or drop a scenario unnoticed.

The server runs as a real subprocess with its own NEONBLUE_HOME and kernel-assigned ports, outside
pytest's basetemp (PostgreSQL runs as an unprivileged user when tests run as root); it and its
embedded PostgreSQL are stopped even when the test fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from mcp_router.runtime.embedded import EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parents[2]
NODE_BIN = REPO / ".node" / "node_modules" / ".bin"
SUITE = REPO / ".node" / "node_modules" / "@modelcontextprotocol" / "conformance"
SUITE_VERSION = "0.2.0-alpha.11"  # the Makefile's CONFORMANCE; a new version means re-reading its scenarios
REQUIREMENTS = "2026-07-28"
START_TIMEOUT = 240  # the full router opens chDB, Chroma and the embedding model: 10-40 s on a busy box
SUITE_TIMEOUT = 600  # the whole set takes a few seconds against a local server

# What each product scenario asks of the server.
PRODUCT_SCENARIOS = {
    "server-stateless": "SEP-2575: per-request _meta, server/discover, version and header errors, 404 for "
                        "removed methods, -32021 for an undeclared client capability (probes), no log "
                        "messages unless asked, request streams carry only incomplete results",
    "tools-list": "every tool has a valid name, a description and an input schema",
    "server-sse-multiple-streams": "concurrent POST streams are served side by side",
    "resources-list": "every resource has a uri and a name",
    "sep-2164-resource-not-found": "reading an unknown resource is -32602, never empty contents",
    "prompts-list": "every prompt has a name and a description",
    "dns-rebinding-protection": "a foreign Host/Origin is refused with 4xx, localhost is served",
    "caching": "list results and resources/read carry ttlMs and cacheScope hints",
    "input-required-result-unsupported-methods": "tools/list and prompts/list never answer input_required",
    "input-required-result-non-tool-request": "prompts/get asks for input and completes on the second round "
                                              "(probe prompt)",
}

# Why each remaining scored scenario cannot measure a product server.
FIXTURE_ONLY = {
    "completion-complete": "completes an argument of the fixture prompt `test_prompt_with_arguments`",
    "tools-call-simple-text": "calls the fixture tool `test_simple_text` and compares its exact text",
    "tools-call-image": "calls the fixture tool `test_image_content`",
    "tools-call-audio": "calls the fixture tool `test_audio_content`",
    "tools-call-embedded-resource": "calls the fixture tool `test_embedded_resource`",
    "tools-call-mixed-content": "calls the fixture tool `test_multiple_content_types`",
    "tools-call-error": "calls the fixture tool `test_error_handling`",
    "tools-call-with-progress": "calls the fixture tool `test_tool_with_progress`",
    "resources-read-text": "reads the fixture resource `test://static-text`",
    "resources-read-binary": "reads the fixture resource `test://static-binary`",
    "resources-templates-read": "reads the fixture template resource `test://template/123/data`",
    "prompts-get-simple": "gets the fixture prompt `test_simple_prompt`",
    "prompts-get-with-args": "gets the fixture prompt `test_prompt_with_arguments`",
    "prompts-get-embedded-resource": "gets the fixture prompt `test_prompt_with_embedded_resource`",
    "prompts-get-with-image": "gets the fixture prompt `test_prompt_with_image`",
    "input-required-result-basic-elicitation": "calls the fixture tool `test_input_required_result_elicitation`",
    "input-required-result-basic-sampling": "calls the fixture tool `test_input_required_result_sampling`",
    "input-required-result-basic-list-roots": "calls the fixture tool `test_input_required_result_list_roots`",
    "input-required-result-request-state": "calls the fixture tool `test_input_required_result_request_state`",
    "input-required-result-multiple-input-requests":
        "calls the fixture tool `test_input_required_result_multiple_inputs`",
    "input-required-result-multi-round": "calls the fixture tool `test_input_required_result_multi_round`",
    "input-required-result-result-type": "calls the fixture tool `test_input_required_result_elicitation`",
    "input-required-result-tampered-state": "calls the fixture tool `test_input_required_result_tampered_state`",
    "input-required-result-capability-check": "calls the fixture tool `test_input_required_result_capabilities`",
    # These three report no FAILURE against any server without the fixture tool (an unknown tool
    # is a WARNING, or the very error they look for): a pass would prove nothing about the product.
    "input-required-result-missing-input-response":
        "calls the fixture tool `test_input_required_result_elicitation`; without it the check is only a WARNING",
    "input-required-result-ignore-extra-params":
        "calls the fixture tool `test_input_required_result_elicitation`; without it the check is only a WARNING",
    "input-required-result-validate-input":
        "calls the fixture tool `test_input_required_result_elicitation` with malformed inputResponses; "
        "the unknown-tool error already counts as SUCCESS",
}

# Settings a developer's shell may carry that would point the server elsewhere or turn auth on.
FOREIGN_SETTINGS = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "HTTP_TOKEN", "HTTP_HOST", "HTTP_PORT",
                    "EMBEDDED_PG_PORT", "EMBEDDED_KAFKA_PORT")
OUTPUT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass(frozen=True)
class Outcome:
    scenario: str
    checks: list[dict]

    def count(self, status: str) -> int:
        return sum(check.get("status") == status for check in self.checks)

    @property
    def failures(self) -> list[dict]:
        return [check for check in self.checks if check.get("status") == "FAILURE"]


def _suite() -> tuple[Path, Path]:
    """The pinned suite's entry point and the node that runs it (>= 22), or skip."""
    node, entry = NODE_BIN / "node", SUITE / "dist" / "index.js"
    if not node.exists() or not entry.exists():
        pytest.skip("MCP conformance suite not installed (make install puts it under .node/; needs npm)")
    installed = json.loads((SUITE / "package.json").read_text())["version"]
    assert installed == SUITE_VERSION, f".node has conformance {installed}, the test reads {SUITE_VERSION}: make install"
    return node, entry


def _scored_server_scenarios() -> list[str]:
    return yaml.safe_load((SUITE / "requirements" / f"{REQUIREMENTS}.yaml").read_text())["server"]


def _server_env(home: Path, pg_port: int, http_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEONBLUE_") and k not in FOREIGN_SETTINGS}
    return {**env, "NEONBLUE_HOME": str(home), "NEONBLUE_PG_PORT": str(pg_port),
            "NEONBLUE_KAFKA_PORT": str(free_port()), "NEONBLUE_HTTP_PORT": str(http_port),
            "NEONBLUE_CONFORMANCE_PROBES": "1", "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1",
            "ANONYMIZED_TELEMETRY": "False"}


def _log_tail(home: Path) -> str:
    path = home / "serve.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _wait_until_serving(proc: subprocess.Popen[bytes], home: Path, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert proc.poll() is None, f"serve --http exited with {proc.returncode}\n{_log_tail(home)}"
        assert time.monotonic() < deadline, f"serve --http not healthy after {START_TIMEOUT}s\n{_log_tail(home)}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes], data_dir: Path, pg_port: int) -> None:
    """SIGTERM (serve stops its PostgreSQL on the way out), then make sure: a leaked one blocks the next run."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if (data_dir / "PG_VERSION").exists():
        EmbeddedPostgres(data_dir, pg_port).stop()


@pytest.fixture
def neonblue_http() -> Iterator[str]:
    """`neonblue serve --http` with the conformance probes on, its own home and free ports: its /mcp URL."""
    _suite()  # skip before paying for a server start
    home = Path(tempfile.mkdtemp(prefix="neonblue-conformance-"))
    pg_port, http_port = free_port(), free_port()
    log = (home / "serve.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "mcp_router", "serve", "--http", "--host", "127.0.0.1",
                             "--port", str(http_port)], cwd=REPO, env=_server_env(home, pg_port, http_port),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    try:
        _wait_until_serving(proc, home, http_port)
        yield f"http://127.0.0.1:{http_port}/mcp"
    finally:
        _stop(proc, home / "pgdata", pg_port)
        shutil.rmtree(home, ignore_errors=True)


def _run_suite(node: Path, entry: Path, url: str, out: Path) -> dict[str, Outcome]:
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(node), str(entry), "server", "--url", url, "--requirements", REQUIREMENTS,
                           "-o", str(out)], env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
                          check=False)
    outcomes = {}
    for checks in sorted(out.glob("*/checks.json")):
        match = OUTPUT_DIR.match(checks.parent.name)
        assert match, f"unexpected output directory {checks.parent.name}"
        outcomes[match["scenario"]] = Outcome(match["scenario"], json.loads(checks.read_text()))
    assert outcomes, f"the suite wrote no checks.json (exit {done.returncode})\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return outcomes


def _table(outcomes: dict[str, Outcome], scored: list[str]) -> str:
    kinds = ("product", "fixture", "not scored")

    def kind(scenario: str) -> str:
        return kinds[0] if scenario in PRODUCT_SCENARIOS else kinds[1] if scenario in scored else kinds[2]

    width = max(map(len, outcomes))
    rows = [f"{'scenario':<{width}}  {'kind':<10}  passed  failed"]
    rows += [f"{o.scenario:<{width}}  {kind(o.scenario):<10}  {o.count('SUCCESS'):>6}  {o.count('FAILURE'):>6}"
             for o in sorted(outcomes.values(), key=lambda o: (kinds.index(kind(o.scenario)), o.scenario))]
    return "\n".join(rows)


def test_the_lists_cover_the_requirement_set_exactly() -> None:
    _suite()
    scored = _scored_server_scenarios()
    assert not set(PRODUCT_SCENARIOS) & set(FIXTURE_ONLY)
    assert sorted(scored) == sorted([*PRODUCT_SCENARIOS, *FIXTURE_ONLY]), (
        f"new in the requirement set: {sorted(set(scored) - set(PRODUCT_SCENARIOS) - set(FIXTURE_ONLY))}; "
        f"gone from it: {sorted((set(PRODUCT_SCENARIOS) | set(FIXTURE_ONLY)) - set(scored))}")


def test_every_product_scenario_passes_over_http(neonblue_http: str) -> None:
    node, entry = _suite()
    scored = _scored_server_scenarios()
    with tempfile.TemporaryDirectory(prefix="neonblue-conformance-out-") as out:
        outcomes = _run_suite(node, entry, neonblue_http, Path(out))
    table = _table(outcomes, scored)
    print(table)

    assert set(scored) <= set(outcomes), f"not run: {sorted(set(scored) - set(outcomes))}\n{table}"
    failing = [f"{scenario} / {check['id']}: {check.get('errorMessage') or check.get('description')}"
               for scenario in PRODUCT_SCENARIOS for check in outcomes[scenario].failures]
    assert not failing, "product scenarios failing:\n" + "\n".join(failing) + "\n\n" + table
    # A scenario that only skipped or warned has shown nothing.
    vacuous = [s for s in PRODUCT_SCENARIOS if outcomes[s].count("SUCCESS") == 0]
    assert not vacuous, f"no successful check in {vacuous}\n{table}"
