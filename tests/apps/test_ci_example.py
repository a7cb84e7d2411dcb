"""The CI example (docs/ci/neonblue-gate.yml, shown in docs/CI.md) runs as written: every `run:` step but
the install runs against the embedded stack (conftest.py's `ci_stack`), and its gate passes with a JUnit
report that validates. The commands are read from the workflow file, so the example cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import xmlschema
from apps_stack import REPO, WORKFLOW, run_step, workflow_job

from mcp_router.apps.call import EXIT_CODES, EXIT_TABLE

GUIDE = REPO / "docs" / "CI.md"


def test_the_guide_shows_the_workflow_file_verbatim() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert WORKFLOW.read_text() in blocks, "docs/CI.md must show docs/ci/neonblue-gate.yml as it is"


def test_the_guide_has_the_exit_code_table_of_the_code() -> None:
    rows = dict(re.findall(r"^\| (\d) \| `?([a-z_, /`]+?)`? \|", GUIDE.read_text(), flags=re.M))
    assert {int(code) for code in rows} == {code for code, _, _ in EXIT_TABLE}, rows
    for kind, code in EXIT_CODES.items():
        if kind != "ok":
            assert kind in rows[str(code)], (kind, code, rows)


def test_every_step_before_the_gate_ran_against_the_embedded_stack(ci_stack) -> None:
    ids = [s["id"] for s in workflow_job()["steps"] if "run" in s]
    assert ids == ["install", "up", "experiment", "traffic", "wait", "gate", "down"], ids
    assert set(ci_stack.ran) == {"up", "experiment", "traffic", "wait"}
    assert all(done.returncode == 0 for done in ci_stack.ran.values())
    assert '"key": "checkout-1step"' in ci_stack.ran["experiment"].stdout  # neonblue call's JSON on stdout
    assert "produced 34" in ci_stack.ran["traffic"].stdout  # every event acknowledged by the broker


def test_the_gate_step_passes_and_publishes_a_valid_junit_report(ci_stack) -> None:
    (gate,) = [s for s in workflow_job()["steps"] if s.get("id") == "gate"]
    done = run_step(gate, ci_stack.env, ci_stack.workdir, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("neonblue gate checkout-1step: PASS"), done.stdout
    (publish,) = [s for s in workflow_job()["steps"] if s.get("id") == "report"]
    report = ci_stack.workdir / publish["with"]["report_paths"]  # the file the publishing step reads
    xmlschema.XMLSchema(Path(__file__).with_name("junit-10.xsd")).validate(str(report))
    assert 'failures="0"' in report.read_text()
