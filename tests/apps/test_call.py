"""`neonblue call`: a real MCP client over stdio (a child `neonblue serve` attached to the running
stack) for a read, a write and refusals, with the exit code of each error kind."""

from __future__ import annotations

import json
import sys

from apps_stack import neonblue, neonblue_all

from mcp_router.apps.call import EXIT_CODES, CallFailed, parse_arguments, summary_line


def _one_line_refusal(done, kind: str) -> str:
    assert done.returncode == EXIT_CODES[kind], (done.returncode, done.stderr)
    assert done.stdout == "", done.stdout  # stdout is for results only
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("neonblue: ") and lines[0].endswith(f"[{kind}]"), done.stderr
    return lines[0]


def test_the_catalogue_lists_every_tool_on_one_line_each(seeded_stack) -> None:
    done, as_json = neonblue_all([["call", "--list"], ["call", "--list", "--format", "json"]], seeded_stack)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = {line.split()[0] for line in lines}
    assert {"get_experiment", "create_experiment", "analyze_experiment_performance", "evaluate_guardrails",
            "router_status"} <= names
    assert len(lines) == len(names) > 30  # the full catalogue, one line per tool, each with a description
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines), lines
    listed = json.loads(as_json.stdout)
    assert {t["name"] for t in listed} == names


def test_a_read_prints_the_structured_result_as_json_or_a_table(seeded_stack) -> None:
    done, table = neonblue_all([["call", "get_experiment", "experiment=checkout-1step"],
                                ["call", "list_experiments", '{"limit": 5}', "--format", "table"]], seeded_stack)
    assert done.returncode == 0, done.stderr
    experiment = json.loads(done.stdout)
    assert experiment["key"] == "checkout-1step" and experiment["status"] == "running"
    assert sum(experiment["assignments_by_variant"].values()) == 12_000  # the streamed exposures reached the registry

    assert table.returncode == 0, table.stderr
    assert "checkout-1step" in table.stdout and "pricing-premium" in table.stdout
    assert max(map(len, table.stdout.splitlines())) <= 80  # folded at the terminal's width, not cut


def test_a_write_round_trips_and_a_repeated_one_is_a_conflict(seeded_stack) -> None:
    definition = {"key": "call-write", "name": "Written by neonblue call", "type": "ui",
                  "primary_metric": "conversion", "variants": [{"key": "a", "is_control": True}, {"key": "b"}]}
    created = neonblue(["call", "create_experiment", json.dumps({"experiment": definition})], seeded_stack)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["status"] == "draft"
    started = neonblue(["call", "start_experiment", "experiment=call-write"], seeded_stack)
    assert started.returncode == 0 and json.loads(started.stdout)["status"] == "running", started.stderr

    again = neonblue(["call", "start_experiment", "experiment=call-write"], seeded_stack)
    assert "only a draft can start" in _one_line_refusal(again, "conflict")
    assert EXIT_CODES["conflict"] == 4

    # A destructive call from a script (no terminal to ask on): the question, exit 4, nothing changed;
    # repeated with confirm=true and a reason, it goes ahead.
    unconfirmed = neonblue(["call", "stop_experiment", "experiment=call-write", "winner=b"], seeded_stack)
    line = _one_line_refusal(unconfirmed, "confirmation_required")
    assert "ship variant 'b' to everyone" in line and "confirm=true" in line
    assert EXIT_CODES["confirmation_required"] == 4
    confirmed = neonblue(["call", "stop_experiment", "experiment=call-write", "winner=b", "confirm=true",
                          "reason=b wins"], seeded_stack)
    assert confirmed.returncode == 0 and json.loads(confirmed.stdout)["winner"] == "b", confirmed.stderr


def test_refusals_are_one_line_on_stderr_with_the_code_of_their_kind(seeded_stack) -> None:
    missing, out_of_range, unknown, malformed = neonblue_all([
        ["call", "get_experiment", "experiment=no-such-experiment"],
        ["call", "list_experiments", "limit=9999"],
        ["call", "no_such_tool"],
        ["call", "list_experiments", "limit"],  # refused before serve starts
    ], seeded_stack)
    assert "no-such-experiment" in _one_line_refusal(missing, "not_found")
    assert EXIT_CODES["not_found"] == 3
    assert "argument 'limit'" in _one_line_refusal(out_of_range, "invalid_input")
    assert EXIT_CODES["invalid_input"] == 2
    assert "no_such_tool" in _one_line_refusal(unknown, "not_found")
    assert "key=value" in _one_line_refusal(malformed, "invalid_input")


def test_a_server_that_cannot_start_is_unavailable(tmp_path, seeded_stack) -> None:
    env = {**seeded_stack, "NEONBLUE_HOME": str(tmp_path / "no-stack"),
           "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing"}  # no stack here, no database there
    done = neonblue(["call", "list_experiments"], env)
    assert "did not start" in _one_line_refusal(done, "unavailable")
    assert EXIT_CODES["unavailable"] == 5


def test_help_documents_the_exit_code_table(seeded_stack) -> None:
    text = neonblue(["call", "--help"], seeded_stack).stdout
    for code in sorted(set(EXIT_CODES.values())):
        assert f"\n    {code}  " in text, text
    bare = neonblue(["call"], seeded_stack)  # no arguments: the help, as a usage error
    assert bare.returncode == EXIT_CODES["invalid_input"] and "Exit codes:" in bare.stderr


def test_arguments_parse_as_json_when_they_parse() -> None:
    assert parse_arguments(['{"experiment": "x", "limit": 3}', "limit=5", "dry_run=true", "name=plain text",
                            "experiment=7"]) == {"experiment": 7, "limit": 5, "dry_run": True,
                                                  "name": "plain text"}
    assert parse_arguments(["options={\"mde\": 0.03}"]) == {"options": {"mde": 0.03}}
    for bad in (["[1, 2]"], ["{not json"], ["=value"], ["no-equals"]):
        try:
            parse_arguments(bad)
        except CallFailed as exc:
            assert exc.kind == "invalid_input" and exc.exit_code == 2
        else:
            raise AssertionError(bad)
    assert summary_line("Store a batch. More text.\n\nExample: {}") == "Store a batch."


def test_claude_desktop_over_stdio_is_asked_before_a_destructive_call(seeded_stack) -> None:
    """An MCP client that declares elicitation (as Claude Desktop does), over stdio to `neonblue serve`
    attached to the running stack: the stack's refusal becomes the user's question, the answer's reason
    reaches the change log."""
    import anyio
    import mcp.types as types
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    questions: list[str] = []

    async def user(context, params: types.ElicitRequestParams) -> types.ElicitResult:
        questions.append(params.message)
        return types.ElicitResult(action="accept", content={"confirm": True, "reason": "asked over stdio"})

    async def journey() -> tuple[dict, list[dict]]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_router", "serve"], env=seeded_stack)
        async with Client(stdio_client(params), elicitation_callback=user) as client:
            definition = {"key": "stdio-confirm", "name": "Confirmed over stdio", "type": "ui",
                          "primary_metric": "conversion", "variants": [{"key": "a", "is_control": True}, {"key": "b"}]}
            for tool, arguments in (("create_experiment", {"experiment": definition}),
                                    ("start_experiment", {"experiment": "stdio-confirm"})):
                assert not (await client.call_tool(tool, arguments)).is_error
            stopped = await client.call_tool("stop_experiment", {"experiment": "stdio-confirm", "winner": "b"})
            assert not stopped.is_error, stopped.content
            detail = await client.call_tool("get_experiment", {"experiment": "stdio-confirm",
                                                               "include_change_log": True})
            return stopped.structured_content, detail.structured_content["change_log"]

    stopped, log = anyio.run(journey)
    assert stopped["status"] == "concluded" and stopped["winner"] == "b"
    assert len(questions) == 1 and "ship variant 'b' to everyone" in questions[0]
    assert log[0]["reason"] == "asked over stdio"


def test_at_a_terminal_the_person_is_asked_and_their_reason_is_audited(seeded_stack) -> None:
    """`neonblue call` at a terminal (stdin and stderr a tty): the destructive call's question goes to the
    person, whose "y" and reason confirm it; a second call answered "n" changes nothing."""
    import os
    import pty
    import select
    import subprocess
    import time

    definition = {"key": "call-tty", "name": "Confirmed at a terminal", "type": "ui",
                  "primary_metric": "conversion", "variants": [{"key": "a", "is_control": True}, {"key": "b"}]}
    for args in (["call", "create_experiment", json.dumps({"experiment": definition})],
                 ["call", "start_experiment", "experiment=call-tty"]):
        assert neonblue(args, seeded_stack).returncode == 0

    def at_terminal(args: list[str], answers: list[str]) -> tuple[int, str, str]:
        """Run `neonblue call` with a pseudo-terminal as stdin and stderr; type each answer after a prompt."""
        primary, secondary = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "mcp_router", *args], env=seeded_stack, stdin=secondary,
                                stderr=secondary, stdout=subprocess.PIPE, text=True)
        os.close(secondary)
        seen, pending, deadline = "", list(answers), time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    seen += os.read(primary, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
                if pending and seen.rstrip().endswith(("[y/N]", ":")):
                    os.write(primary, (pending.pop(0) + "\n").encode())
        out, _ = proc.communicate(timeout=60)
        os.close(primary)
        return proc.returncode, out, seen

    code, out, seen = at_terminal(["call", "set_variant_weights", "experiment=call-tty", 'weights={"a": 0.2, "b": 0.8}'],
                                  ["n"])
    assert code == EXIT_CODES["confirmation_required"], seen  # declined: refused, nothing changed
    assert "neonblue: " in seen and "'call-tty'" in seen and "[y/N]" in seen, seen
    weights = json.loads(neonblue(["call", "get_experiment", "experiment=call-tty"], seeded_stack).stdout)["variants"]
    assert [v["weight"] for v in weights] == [0.5, 0.5]

    code, out, seen = at_terminal(["call", "stop_experiment", "experiment=call-tty", "winner=b"],
                                  ["y", "b won the test on the terminal"])
    assert code == 0, seen
    assert json.loads(out)["winner"] == "b"
    detail = neonblue(["call", "get_experiment", "experiment=call-tty", "include_change_log=true"], seeded_stack)
    reasons = [entry["reason"] for entry in json.loads(detail.stdout)["change_log"]]
    assert "b won the test on the terminal" in reasons, reasons
