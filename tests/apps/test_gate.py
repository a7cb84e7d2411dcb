"""`neonblue gate` on the demo's decisive experiments: checkout-1step ships and passes; pricing-premium
rolls back (its revenue guardrail fails) and fails with the reason on stderr; the JUnit report of each
validates against the Jenkins xUnit JUnit schema (junit-10.xsd, vendored beside this file)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from apps_stack import neonblue

from mcp_router.apps.call import EXIT_CODES

SCHEMA = Path(__file__).with_name("junit-10.xsd")


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(SCHEMA)


def _suite(path: Path, schema: xmlschema.XMLSchema) -> ET.Element:
    schema.validate(str(path))  # raises with the first violation
    return ET.parse(path).getroot()


def test_the_shipping_experiment_passes_the_production_gate(seeded_stack, tmp_path, junit_schema) -> None:
    report = tmp_path / "reports" / "gate.xml"
    done = neonblue(["gate", "checkout-1step", "--allow", "ship,keep_running", "--environment", "production",
                     "--junit", str(report)], seeded_stack)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "neonblue gate checkout-1step: PASS"
    assert lines[1] == "  allow     ship, keep_running (environment production)"
    text = done.stdout
    assert "verdict   ship (rule primary_win" in text  # the verdict, the rule and the numbers behind it
    assert "one_step wins on conversion" in text and "chance to win" in text and "always-valid 95% CI" in text
    assert "ok   guardrail revenue (one_step)" in text
    assert max(map(len, lines)) <= 80, [line for line in lines if len(line) > 80]

    suite = _suite(report, junit_schema)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "0")
    names = [case.get("name") for case in suite.iter("testcase")]
    assert names == ["verdict", "minimum data (production)", "primary harm conversion (one_step)",
                     "guardrail revenue (one_step)"]
    assert suite.find("system-out").text.startswith("neonblue gate checkout-1step: PASS")


def test_the_rolled_back_experiment_fails_with_the_reason_on_stderr(seeded_stack, tmp_path, junit_schema) -> None:
    report = tmp_path / "gate.xml"
    done = neonblue(["gate", "pricing-premium", "--environment", "production", "--junit", str(report)],
                    seeded_stack)
    assert done.returncode == EXIT_CODES["gate_failed"] == 6, done.stdout + done.stderr
    assert done.stdout.startswith("neonblue gate pricing-premium: FAIL")
    reasons = done.stderr.splitlines()
    assert reasons[0].startswith("neonblue: gate failed: verdict: roll_back (guardrail_failure) is not in the "
                                 "allow list (ship): Guardrail revenue fails for premium"), reasons
    assert reasons[1].startswith("neonblue: gate failed: guardrail revenue (premium): -2"), reasons
    assert "beyond the production tolerance of 5%" in reasons[1]
    assert len(reasons) == 2
    assert max(map(len, done.stdout.splitlines())) <= 80

    suite = _suite(report, junit_schema)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "0")
    failed = {case.get("name"): case.find("failure") for case in suite.iter("testcase")
              if case.find("failure") is not None}
    assert set(failed) == {"verdict", "guardrail revenue (premium)"}
    assert failed["verdict"].get("type") == "verdict" and "roll_back" in failed["verdict"].get("message")


def test_the_policy_decides_what_a_breach_is(seeded_stack) -> None:
    """Development tolerates a 25% degradation: the revenue guardrail still fails non-inferiority, but
    breaches no policy; allowing roll_back passes the verdict and not the guardrail."""
    done = neonblue(["gate", "pricing-premium", "--allow", "roll_back", "--environment", "development"],
                    seeded_stack)
    assert done.returncode == EXIT_CODES["gate_failed"], done.stderr
    assert "ok   verdict: roll_back" in done.stdout
    assert done.stderr.splitlines() == [line for line in done.stderr.splitlines() if "guardrail revenue" in line]
    assert "fails non-inferiority" in done.stderr and "tolerance" not in done.stderr


def test_an_unknown_experiment_is_not_found_and_reported_as_an_error(seeded_stack, tmp_path, junit_schema) -> None:
    report = tmp_path / "gate.xml"
    done = neonblue(["gate", "no-such-experiment", "--junit", str(report)], seeded_stack)
    assert done.returncode == EXIT_CODES["not_found"], done.stderr
    assert done.stderr.count("\n") == 1 and "no-such-experiment" in done.stderr
    suite = _suite(report, junit_schema)
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")
    assert suite.find("testcase/error").get("type") == "not_found"

    bad = neonblue(["gate", "checkout-1step", "--allow", "shipit"], seeded_stack)
    assert bad.returncode == EXIT_CODES["invalid_input"] and "--allow: shipit" in bad.stderr


def test_a_decision_before_the_policys_minimum_data_does_not_pass() -> None:
    """The policy's minimum days and users gate every verdict but keep_running (pure: the judgement alone)."""
    from mcp_router.apps.gate import judge

    verdict = {"verdict": "ship", "rule_id": "primary_win", "rule": "b wins.", "confidence": 0.99,
               "confidence_basis": "chance to win", "variant": "b"}
    analysis = {"verdict": verdict, "days_observed": 3.0, "options": {"alpha": 0.05}, "metrics": [],
                "variants": [{"key": "a", "users": 5000}, {"key": "b", "users": 4000}]}
    early = judge("x", analysis, {"guardrails": []}, ["ship"], "production")
    assert not early.passed and early.exit_code == EXIT_CODES["gate_failed"]
    assert "3.0 of 7 days, 4,000 of 1,000 users" in early.checks[1].message
    assert judge("x", analysis, {"guardrails": []}, ["ship"], "staging").passed  # staging needs 3 days
    waiting = {**analysis, "verdict": {**verdict, "verdict": "keep_running", "rule_id": "underpowered"}}
    assert judge("x", waiting, {"guardrails": []}, ["keep_running"], "production").passed
