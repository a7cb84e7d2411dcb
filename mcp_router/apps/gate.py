"""`neonblue gate`: a release gate a CI pipeline understands, over the same MCP tools an agent calls.

It runs `analyze_experiment_performance` (the verdict, the rule and the numbers behind it) and
`evaluate_guardrails` (each guardrail and primary metric, seen as harm) through one stdio session
(`apps/call.py`), and judges them under an environment's autopilot policy
(`mcp_servers.intelligence.decisions.POLICIES`):

- the verdict must be in the allow list (default: ship);
- no guardrail may fail (non-inferiority failed with significant harm), and no guardrail or
  primary metric may breach the policy (degraded beyond its max degradation, harm significant);
- a verdict other than keep_running needs the policy's minimum data (days, users per arm).

Exit 0 when every check passes, EXIT_CODES["gate_failed"] when one fails (each reason one line on
stderr), the refusal's code when a tool refuses (unknown experiment, store down). `--junit` writes
one testsuite: a testcase for the verdict, the minimum data and each guardrail check.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_router.apps.call import (
    EXIT_CODES,
    CallFailed,
    call_tool,
    exit_code_help,
    fail,
    open_session,
    run_session,
)

GATE_HELP = f"""Gate a release on EXPERIMENT: exit 0 only when its verdict is allowed and no guardrail fails.

\b
Runs analyze_experiment_performance and evaluate_guardrails over MCP
(stdio, like `call`) and checks, under the environment's policy:
  the verdict is in --allow; no guardrail fails non-inferiority; no
  guardrail or primary metric is degraded beyond the policy's tolerance;
  a verdict other than keep_running has the policy's minimum data.
Prints the verdict, the rule and the numbers; each failed check is one
line on stderr. --junit FILE writes a JUnit XML report.

{exit_code_help()}
"""

VERDICTS = ("ship", "roll_back", "keep_running", "needs_review")
WIDTH = 80  # the report reads at 80 columns (a CI log, a narrow terminal)


@dataclass(frozen=True)
class Check:
    """One thing the gate checked: a JUnit testcase."""

    name: str
    passed: bool
    summary: str  # one line: what was found
    kind: str = "guardrail"  # verdict | minimum_data | guardrail | primary_harm
    detail: str = ""  # why, when it failed (the verdict's rule)

    @property
    def message(self) -> str:
        return f"{self.summary}: {self.detail}" if self.detail and not self.passed else self.summary


@dataclass
class GateReport:
    experiment: str
    environment: str
    allow: tuple[str, ...]
    verdict: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the readable report
    error: CallFailed | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return EXIT_CODES["ok"] if self.passed else EXIT_CODES["gate_failed"]


# ---------------------------------------------------------------- the judgement (pure)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _days(n: float) -> str:
    return f"{n:g} day" + ("" if n == 1 else "s")


def judge(experiment: str, analysis: dict[str, Any], guardrails: dict[str, Any], allow: Sequence[str],
          environment: str) -> GateReport:
    """The gate's checks and report from the two tools' results, under `environment`'s policy."""
    from mcp_servers.intelligence.decisions import POLICIES, MetricHarm, policy_breaches

    policy = POLICIES[environment]
    alpha = float(analysis.get("options", {}).get("alpha", 0.05))
    verdict = analysis["verdict"]
    report = GateReport(experiment, environment, tuple(allow), verdict)

    name = verdict["verdict"]
    report.checks.append(Check(
        "verdict", name in allow,
        f"{name} ({verdict['rule_id']}) is {'in' if name in allow else 'not in'} the allow list "
        f"({', '.join(allow)})", "verdict", verdict["rule"]))

    arms = analysis.get("variants", [])
    smallest = min((v["users"] for v in arms), default=0)
    days = float(analysis.get("days_observed", 0.0))
    enough = days >= policy.min_days and smallest >= policy.min_units_per_variant
    needed = name != "keep_running"
    report.checks.append(Check(
        f"minimum data ({environment})", enough or not needed,
        f"{days:.1f} of {_days(policy.min_days)}, {smallest:,} of {policy.min_units_per_variant:,} users in the "
        f"smallest arm" + ("" if needed else " (not required to keep running)")
        + ("" if enough or not needed else f": too early for a {name} under the {environment} policy"),
        "minimum_data"))

    for g in guardrails.get("guardrails", []):
        harm = MetricHarm(g["metric"], g["role"], g["variant"], g["degradation"], g["p_harm"])
        breach = bool(policy_breaches([harm], policy, alpha))
        failed = breach or (g["role"] == "guardrail" and g["status"] == "fail")
        margin = f", margin {g['margin']:.0%}" if g.get("margin") is not None else ""
        why = []
        if g["role"] == "guardrail" and g["status"] == "fail":
            why.append("fails non-inferiority with significant harm")
        if breach:
            why.append(f"degraded beyond the {environment} tolerance of {policy.max_degradation:.0%}")
        summary = (f"{_pct(g['relative_lift'])} ({g['direction']} is better){margin}, status {g['status']}, p(harm) {g['p_harm']:.2g}"
                   + (f": {' and '.join(why)}" if why else ""))
        label = "guardrail" if g["role"] == "guardrail" else "primary harm"
        report.checks.append(Check(f"{label} {g['metric']} ({g['variant']})", not failed, summary,
                                   "guardrail" if g["role"] == "guardrail" else "primary_harm"))

    report.lines = _lines(report, analysis, policy)
    return report


def _lines(report: GateReport, analysis: dict[str, Any], policy: Any) -> list[str]:
    verdict = report.verdict
    out = [f"neonblue gate {report.experiment}: {'PASS' if report.passed else 'FAIL'}"]

    def field_(label: str, text: str) -> None:
        out.extend(textwrap.wrap(text, WIDTH, initial_indent=f"  {label:<9} ", subsequent_indent=" " * 12,
                                 break_on_hyphens=False))

    field_("allow", f"{', '.join(report.allow)} (environment {report.environment})")
    field_("verdict", f"{verdict['verdict']} (rule {verdict['rule_id']}, confidence {verdict['confidence']:.0%}: "
                      f"{verdict['confidence_basis']})")
    field_("rule", verdict["rule"])
    arm = verdict.get("variant")
    primary = [m for m in analysis.get("metrics", []) if m.get("role") == "primary" and not m.get("error")
               and (arm is None or m["variant"] == arm)]
    if primary:
        m = primary[0]
        ci = m.get("relative_ci_sequential") or [None, None]
        p = m["p_value_adjusted"] if m.get("p_value_adjusted") is not None else m.get("p_value_sequential")
        field_("numbers", f"{m['metric']}, {m['variant']} vs {m['control']}: {_pct(m['relative_lift'])} "
                          f"(always-valid 95% CI {_pct(ci[0])} to {_pct(ci[1])}), decision p {p:.2g}, "
                          f"chance to win {m['chance_to_win']:.1%}, users {m['n']:,} vs {m['control_n']:,}")
    field_("policy", f"{policy.environment}: max degradation {policy.max_degradation:.0%}, at least "
                     f"{_days(policy.min_days)} and {policy.min_units_per_variant:,} users per arm")
    out.append("  checks")
    for c in report.checks:
        mark = "ok  " if c.passed else "FAIL"
        out.extend(textwrap.wrap(f"{c.name}: {c.summary}", WIDTH,
                                 initial_indent=f"    {mark} ", subsequent_indent=" " * 9, break_on_hyphens=False))
    return out


# ---------------------------------------------------------------- JUnit XML


def junit_xml(report: GateReport) -> bytes:
    """One <testsuite>: a testcase per check with a <failure> for each failed one, or one <error>
    testcase when the tools could not answer. Valid against the Jenkins xUnit junit-10.xsd."""
    cases = report.checks if report.error is None else []
    failures = sum(not c.passed for c in cases)
    suite = ET.Element("testsuite", {
        "name": f"neonblue gate {report.experiment}",
        "tests": str(len(cases) or 1),
        "failures": str(failures),
        "errors": "0" if report.error is None else "1",
        "skipped": "0",
        "time": f"{report.seconds:.3f}",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "hostname": socket.gethostname() or "localhost",
    })
    properties = ET.SubElement(suite, "properties")
    for key, value in (("experiment", report.experiment), ("environment", report.environment),
                       ("allow", ",".join(report.allow)), ("verdict", report.verdict.get("verdict", "")),
                       ("rule_id", report.verdict.get("rule_id", ""))):
        ET.SubElement(properties, "property", {"name": key, "value": value})
    classname = f"neonblue.gate.{report.experiment}"
    if report.error is not None:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "evaluate", "time": "0"})
        error = ET.SubElement(case, "error", {"message": report.error.message, "type": report.error.kind})
        error.text = report.error.message
    for c in cases:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": c.name, "time": "0"})
        if not c.passed:
            failure = ET.SubElement(case, "failure", {"message": c.message, "type": c.kind})
            failure.text = c.message
    ET.SubElement(suite, "system-out").text = "\n".join(report.lines) + "\n"
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n"


# ---------------------------------------------------------------- the command


def parse_allow(text: str) -> tuple[str, ...]:
    allow = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in allow if v not in VERDICTS]
    if unknown or not allow:
        raise CallFailed("invalid_input", f"--allow: {', '.join(unknown) or 'nothing'} is not a verdict; "
                                          f"choose from {', '.join(VERDICTS)}")
    return allow


def run_gate(experiment: str, allow_text: str, environment: str, junit: Path | None = None,
             verbose: bool = False) -> int:
    """`neonblue gate`: print the report, write the JUnit file, return the exit code."""
    import anyio

    try:
        allow = parse_allow(allow_text)
    except CallFailed as exc:
        return fail(exc)

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        # The child serve runs under the environment asked for (its own evaluate_guardrails, when it
        # opens the stores); attached to a running stack, the gate applies that policy to the numbers.
        async with open_session({"ENVIRONMENT": environment}, verbose) as client:
            analysis = await call_tool(client, "analyze_experiment_performance", {"experiment": experiment})
            guardrails = await call_tool(client, "evaluate_guardrails", {"experiment": experiment})
            return analysis, guardrails

    started = time.perf_counter()
    try:
        analysis, guardrails = run_session(anyio.run, main)
        report = judge(experiment, analysis, guardrails, allow, environment)
    except CallFailed as exc:
        report = GateReport(experiment, environment, allow, error=exc,
                            lines=[f"neonblue gate {experiment}: ERROR ({exc.kind}) {exc.message}"])
    report.seconds = time.perf_counter() - started
    if junit is not None:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            junit.write_bytes(junit_xml(report))
        except OSError as exc:
            return fail(CallFailed("invalid_input", f"--junit {junit}: {exc.strerror or exc}"))
    if report.error is not None:
        return fail(report.error)
    print("\n".join(report.lines))
    sys.stdout.flush()
    for c in report.checks:
        if not c.passed:
            print(f"neonblue: gate failed: {c.name}: {c.message}", file=sys.stderr)
    return report.exit_code
