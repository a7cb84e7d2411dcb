"""Write the captured output into docs/GETTING_STARTED.md (between its `<!-- gs:NAME:start -->` /
`<!-- gs:NAME:end -->` markers). It starts its own stack in a temporary NEONBLUE_HOME on free ports,
runs every command the guide shows — literally, in bash, with .venv/bin first on PATH — calls the
tools through a real MCP client over stdio (`neonblue serve`, spawned from the entry
`neonblue claude-config --profile core` prints), then stops the stack (`neonblue down`, and
`down --force` whatever happened). Tool arguments are checked against each tool's inputSchema
first: an unknown argument stops the script. Rerun after changing a command, a tool or an endpoint.

    .venv/bin/python docs/generate_getting_started.py      # → docs/GETTING_STARTED.md

The output shows the temporary home, ports and checkout as the defaults a user has
(/home/you/.neonblue, 8765, 25432, 19092, /home/you/neonblue).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from generate_rest_journey import rounded  # type: ignore[import-not-found]  # this folder's sibling script
from mcp import Client, StdioServerParameters

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "GETTING_STARTED.md"
VENV_BIN = Path(sys.executable).parent if (Path(sys.executable).parent / "neonblue").exists() else REPO / ".venv" / "bin"
KEY = "signup-short-form"       # the agent's experiment (section 1), fed by Kafka (section 3)
REST_KEY = "pricing-annual-banner"  # the app's experiment (section 2)
DEFAULT_PORTS = {"NEONBLUE_HTTP_PORT": "8765", "NEONBLUE_PG_PORT": "25432", "NEONBLUE_KAFKA_PORT": "19092"}
REST_PRELUDE = ('API=http://127.0.0.1:${NEONBLUE_HTTP_PORT:-8765}/api/v1/experiments\n'
                'AUTH="Authorization: Bearer $(cat ${NEONBLUE_HOME:-$HOME/.neonblue}/run/http_token)"')


class Capture:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="neonblue-getting-started-"))
        self.home = self.base / "home"
        from mcp_router.runtime.embedded import free_port

        ports = {name: str(free_port()) for name in DEFAULT_PORTS}
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEONBLUE_") and k not in (
            "DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_DATABASE",
            "VIRTUAL_ENV", "LOG_LEVEL")}
        env.update(ports, NEONBLUE_HOME=str(self.home), NEONBLUE_HTTP_HOST="127.0.0.1", HF_HUB_OFFLINE="1",
                   PATH=f"{VENV_BIN}:{env.get('PATH', '')}", COLUMNS="100", TERM="dumb", NO_COLOR="1")
        self.env = env
        self.ports = ports
        self.sections: dict[str, list[str]] = {}

    # ---- output, as a user would see it
    def normal(self, text: str) -> str:
        text = text.replace(str(self.home), "/home/you/.neonblue").replace(str(REPO), "/home/you/neonblue")
        text = text.replace(str(self.base), "/tmp")
        for name, port in self.ports.items():
            text = re.sub(rf"(?<![\d.]){port}(?!\d)", DEFAULT_PORTS[name], text)
        return text.rstrip()

    def add(self, section: str, *lines: str) -> None:
        self.sections.setdefault(section, []).extend(lines)

    def sh(self, command: str, *, check: bool = True, prelude: str = "", timeout: float = 600,
           cwd: Path = REPO) -> str:
        """Run `command` in bash exactly as shown; its stdout + stderr, normalised."""
        done = subprocess.run(["bash", "-c", f"{prelude}\n{command}" if prelude else command], env=self.env,
                              cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            sys.exit(f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        text = self.normal(done.stdout + (done.stderr if done.stderr.strip() else ""))
        # rich pads its tables to the terminal width, and draws a progress bar: neither is output to read.
        return "\n".join(line.rstrip() for line in text.splitlines() if "━" not in line)

    def show(self, section: str, command: str, lang: str = "text", expect: str = "", **kwargs: Any) -> str:
        out = self.sh(command, **kwargs)
        if expect not in out:
            sys.exit(f"`{command}` answered {out!r}, without {expect!r}")
        self.add(section, "```bash", command, "```", f"```{lang}", out, "```", "")
        return out


# ---- MCP calls, checked against the tool's inputSchema
def check_args(tool: Any, args: dict[str, Any]) -> None:
    schema = tool.input_schema
    defs = schema.get("$defs", {})

    def check(where: str, spec: dict[str, Any], value: Any) -> None:
        while "$ref" in spec:
            spec = defs[spec["$ref"].rsplit("/", 1)[-1]]
        if not isinstance(value, dict) or "properties" not in spec:
            return
        unknown = set(value) - set(spec["properties"])
        if unknown:
            sys.exit(f"{tool.name}: unknown argument(s) {sorted(unknown)} at {where}; the inputSchema has "
                     f"{sorted(spec['properties'])}. Update docs/generate_getting_started.py.")
        missing = set(spec.get("required", [])) - set(value)
        if missing:
            sys.exit(f"{tool.name}: missing required argument(s) {sorted(missing)} at {where}")
        for key, item in value.items():
            check(f"{where}.{key}", spec["properties"][key], item)

    check("arguments", schema, args)


def pick(x: Any, keys: list[str]) -> dict[str, Any]:
    return {k: x[k] for k in keys if k in x}


class Agent:
    def __init__(self, cap: Capture, client: Client, tools: dict[str, Any]) -> None:
        self.cap, self.client, self.tools = cap, client, tools
        self.all_tools: dict[str, Any] = {}

    async def discover(self, section: str, query: str) -> list[str]:
        """find_tools: the catalogue by meaning; the tools found become callable here by name."""
        found = await self.call(section, "find_tools", {"query": query, "limit": 3},
                                view=lambda d: {"matches": [pick(m, ["name", "score"]) for m in d["matches"]]})
        for match in found["matches"]:
            schema = match.get("input_schema") or match.get("inputSchema")
            if schema is None:
                sys.exit(f"find_tools answered no input schema: {sorted(match)}")
            self.all_tools[match["name"]] = type("T", (), {"name": match["name"], "input_schema": schema})()
        return [m["name"] for m in found["matches"]]

    async def call(self, section: str, name: str, args: dict[str, Any], view=None, shown: bool = True) -> Any:
        tool = self.tools.get(name) or self.all_tools.get(name)
        if tool is None:
            sys.exit(f"no tool {name!r} in the catalogue")
        check_args(tool, args)
        result = await self.client.call_tool(name, args)
        if result.is_error:
            sys.exit(f"{name}({json.dumps(args)}) failed: {result.content[0].text if result.content else result}")
        data = result.structured_content
        if shown:
            answer = view(data) if view else data
            self.cap.add(section, "```json",
                         "→ " + json.dumps({"name": name, "arguments": args}, ensure_ascii=False),
                         "← " + json.dumps(rounded(answer), indent=2, ensure_ascii=False).replace("\n", "\n  "),
                         "```", "")
        return data


def verdict_view(a: dict[str, Any]) -> dict[str, Any]:
    view = {"verdict": pick(a["verdict"], ["verdict", "rule_id", "rule"]),
            "variants": [pick(v, ["key", "users"]) for v in a.get("variants", [])]}
    if a.get("metrics"):
        view["primary"] = pick(a["metrics"][0], ["metric", "variant", "control_mean", "mean", "relative_lift",
                                                  "relative_ci_sequential", "p_value_sequential"])
    view["srm"] = pick(a.get("srm") or {}, ["p_value", "flagged"])
    return view


async def session(cap: Capture, entry: dict[str, Any]) -> None:
    env = {**{k: v for k, v in cap.env.items() if k in ("PATH", "HOME", "LANG")}, **entry["env"]}
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env, cwd=str(cap.base))
    async with Client(params) as client:
        listed = (await client.list_tools()).tools
        agent = Agent(cap, client, {t.name: t for t in listed})
        cap.add("tools", "```text", f"{len(listed)} tools: " + ", ".join(t.name for t in listed), "```", "")

        # Discovery: find_tools answers the whole catalogue by meaning; the found tool is called by name.
        predicted = "predict_user_assignment" in await agent.discover(
            "conversation", "predict which variant a user would be assigned")

        cap.add("conversation", "*Design*: the agent asks how many users the test needs.", "")
        plan = await agent.call("conversation", "plan_experiment", {
            "goal": "A shorter signup form (4 fields instead of 7) raises signup completion",
            "baseline": {"mean": 0.10}, "mde": 0.2, "traffic_per_day": 1000},
            view=lambda d: pick(d, ["sample_size_per_variant", "total_sample_size", "days", "duration_days",
                                    "summary", "recommendation"]))
        per_arm = int(plan.get("sample_size_per_variant") or 1000)
        cap.add("conversation", "*Create* a draft with two arms; each variant's `config` is what the app reads:", "")
        await agent.call("conversation", "create_experiment", {"experiment": {
            "key": KEY, "name": "Shorter signup form", "type": "ui",
            "hypothesis": "Four fields instead of seven raise signup completion.",
            "primary_metric": {"name": "conversion"}, "min_sample_size": per_arm,
            "variants": [{"key": "control", "is_control": True, "config": {"fields": 7}},
                         {"key": "short_form", "config": {"fields": 4}}]}},
            view=lambda d: {**pick(d, ["key", "status", "primary_metric", "min_sample_size"]),
                            "variants": [pick(v, ["key", "is_control", "weight", "config"]) for v in d["variants"]]})
        cap.add("conversation", "*Start* it: from now on `get_variant` assigns users.", "")
        await agent.call("conversation", "start_experiment", {"experiment": KEY},
                         view=lambda d: pick(d, ["key", "status", "started_at"]))
        variant = "short_form"
        if predicted:
            cap.add("kafka-variant", "The snippet's user gets the variant the registry's hash gives them; "
                    "`predict_user_assignment` (found by `find_tools` above, called by name) says which, "
                    "without recording anything:", "")
            guess = await agent.call("kafka-variant", "predict_user_assignment",
                                     {"experiment": KEY, "user_id": "reader-1"},
                                     view=lambda d: pick(d, ["variant_key", "in_experiment", "source"]))
            variant = guess.get("variant_key") or variant

        # ---- section 2: REST
        rest(cap)

        # ---- section 3: Kafka
        await kafka(cap, agent, variant)


def rest(cap: Capture) -> None:
    s = "rest"
    cap.add(s, "```bash", REST_PRELUDE, "```", "")
    body = json.dumps({"key": REST_KEY, "name": "Annual plan banner", "type": "ui", "primary_metric": "conversion",
                       "variants": [{"key": "control", "is_control": True, "config": {"banner": False}},
                                    {"key": "banner", "config": {"banner": True}}]})
    cap.show(s, f"curl -s -X POST \"$API/\" -H \"$AUTH\" -H \"Content-Type: application/json\" -d '{body}' "
                "| jq -c '{key, status}'", prelude=REST_PRELUDE, expect='"status":"draft"')
    cap.show(s, f'curl -s -X POST "$API/{REST_KEY}/start" -H "$AUTH" | jq -c \'{{key, status}}\'',
             prelude=REST_PRELUDE, expect='"status":"running"')
    got = cap.show(s, f'curl -s -X POST "$API/get-variant" -H "$AUTH" -H "Content-Type: application/json" '
                      f'-d \'{{"experiment": "{REST_KEY}", "user_id": "user-1"}}\' | jq -c', prelude=REST_PRELUDE)
    if "variant_key" not in got:
        sys.exit(f"get-variant answered {got}")
    cap.show(s, f'curl -s -X POST "$API/record-result" -H "$AUTH" -H "Content-Type: application/json" '
                f'-d \'{{"experiment": "{REST_KEY}", "user_id": "user-1", "metric": "conversion", "value": 1}}\' '
                "| jq -c '{variant_key, metric, value, duplicate}'", prelude=REST_PRELUDE, expect='"duplicate":false')
    # The exposure and the result travel outbox → Kafka → event store: wait until the analysis counts them.
    analyze = (f'curl -s "$API/{REST_KEY}/analyze" -H "$AUTH" '
               "| jq -c '{verdict: .verdict.verdict, rule_id: .verdict.rule_id, users: [.variants[].users]}'")
    deadline = time.monotonic() + 120
    while '"users":[1,0]' not in (out := cap.sh(analyze, prelude=REST_PRELUDE)) and '"users":[0,1]' not in out:
        if time.monotonic() > deadline:
            sys.exit(f"the analysis did not count user-1 in 120 s: {out}")
        time.sleep(1)
    cap.show(s, analyze, prelude=REST_PRELUDE)
    t = "token"
    cap.show(t, "cat ${NEONBLUE_HOME:-$HOME/.neonblue}/run/http_token | wc -c", check=True)
    base = "http://127.0.0.1:${NEONBLUE_HTTP_PORT:-8765}"
    cap.show(t, f"curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/openapi.json            # no token\n"
                f"curl -s -o /dev/null -w '%{{http_code}}\\n' -H \"$AUTH\" {base}/openapi.json\n"
                f"curl -s -o /dev/null -w '%{{http_code}}\\n' -H \"$AUTH\" {base}/docs\n"
                f"curl -s {base}/health", prelude=REST_PRELUDE)


SNIPPET = '''import asyncio, json, os
from datetime import UTC, datetime
from aiokafka import AIOKafkaProducer

now = datetime.now(UTC).isoformat()
exposure = {"event_id": "reader-1-exp", "event_type": "exposure", "timestamp": now, "user_id": "reader-1",
            "experiment_id": "%(key)s", "variant": "%(variant)s"}
conversion = {**exposure, "event_id": "reader-1-conv", "event_type": "conversion"}

async def main():
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{os.environ.get('NEONBLUE_KAFKA_PORT', '19092')}")
    await producer.start()
    await producer.send_and_wait("experiments_events", json.dumps(exposure).encode(), key=b"reader-1")
    await producer.send_and_wait("analytics_events", json.dumps(conversion).encode(), key=b"reader-1")
    await producer.stop()
    print("sent", exposure["event_type"], "and", conversion["event_type"], "for", exposure["user_id"])

asyncio.run(main())
'''


async def kafka(cap: Capture, agent: Agent, variant: str) -> None:
    s = "kafka"
    cap.show(s, "neonblue schema | jq -c '{required, properties: (.properties | keys)}'", lang="json")
    snippet = SNIPPET % {"key": KEY, "variant": variant}
    (cap.base / "produce_two.py").write_text(snippet)
    cap.add(s, "`produce_two.py`, one exposure and one conversion (the conversion carries the same "
               "`experiment_id` and `variant`):", "", "```python", snippet.rstrip(), "```", "")
    cap.show(s, "python produce_two.py", cwd=cap.base)
    cap.add(s, "Then a crowd: `neonblue generate` assigns users with the registry's hash and draws each "
               "arm's conversions from the rate you give it (here 10% against 12%):", "")
    cap.show(s, f"neonblue generate --experiment {KEY} --users 6000 --truth control=0.10 --truth short_form=0.12")
    # Wait until the broker's lag is 0 and the analysis counts every exposure.
    deadline = time.monotonic() + 300
    while True:
        rows = json.loads(cap.sh("neonblue status --json"))
        lag = next((r.get("lag") or {} for r in rows if r["name"] == "kafka"), {}).get("total")
        if lag == 0:
            break
        if time.monotonic() > deadline:
            sys.exit(f"the stream still lags by {lag} after 300 s")
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    cap.add("status", "")
    cap.show("status", "neonblue status")
    if "get_variant_statistics" not in await agent.discover("counted", "how many users and conversions per variant"):
        sys.exit("find_tools did not find get_variant_statistics")
    await agent.call("counted", "get_variant_statistics", {"experiment": KEY, "metrics": ["conversion"]},
                     view=lambda d: {**pick(d, ["experiment", "experiment_key", "computed_from"]),
                                     "statistics": [pick(row, ["variant", "metric", "n", "users_with_metric", "sum",
                                                               "mean"]) for row in d.get("statistics", [])]})
    await agent.call("counted", "analyze_experiment_performance", {"experiment": KEY}, view=verdict_view)


def fill(sections: dict[str, list[str]], stamp: str) -> None:
    if os.environ.get("GS_DUMP"):
        Path(os.environ["GS_DUMP"]).write_text(json.dumps(sections, indent=1))
    doc = DOC.read_text()
    for name, lines in {**sections, "stamp": [stamp]}.items():
        start, end = f"<!-- gs:{name}:start -->", f"<!-- gs:{name}:end -->"
        if start not in doc or end not in doc:
            sys.exit(f"{DOC.name} has no {start} ... {end}")
        head, rest = doc.split(start, 1)
        _, tail = rest.split(end, 1)
        doc = head + start + "\n" + "\n".join(lines).strip() + "\n" + end + tail
    left = set(re.findall(r"<!-- gs:([a-z-]+):start -->", doc)) - set(sections) - {"stamp"}
    if left:
        sys.exit(f"{DOC.name}: markers nothing was captured for: {sorted(left)}")
    DOC.write_text(doc)


def main() -> None:
    cap = Capture()
    try:
        cap.show("up", "neonblue up")
        cap.show("claude-config", "neonblue claude-config --profile core", lang="json")
        core = json.loads(cap.sh("neonblue claude-config --profile core"))["mcpServers"]["neonblue"]
        full = json.loads(cap.sh("neonblue claude-config"))["mcpServers"]["neonblue"]
        if {k: v for k, v in core["env"].items() if k != "NEONBLUE_TOOL_PROFILE"} != full["env"]:
            sys.exit("claude-config with and without --profile core differ beyond NEONBLUE_TOOL_PROFILE")
        # The entry as Claude Desktop runs it: its command, its args, only its env (real paths and ports).
        entry = json.loads(subprocess.run([str(VENV_BIN / "neonblue"), "claude-config", "--profile", "core"],
                                          env=cap.env, capture_output=True, text=True, check=True).stdout
                           )["mcpServers"]["neonblue"]
        asyncio.run(session(cap, entry))
        cap.show("port", "NEONBLUE_HOME=second-home neonblue up", check=False, cwd=cap.base)
        cap.show("down", "neonblue down")
        fill(cap.sections, f"Captured by `docs/generate_getting_started.py` on {datetime.now(UTC):%Y-%m-%d}, "
                           "from a stack it started in a temporary `NEONBLUE_HOME` on free ports (shown here as "
                           "the defaults: `/home/you/.neonblue`, 8765, 25432, 19092; the checkout as "
                           "`/home/you/neonblue`).")
        print(f"wrote {DOC}", file=sys.stderr)
    finally:
        subprocess.run([str(VENV_BIN / "neonblue"), "down", "--force"], env=cap.env, cwd=REPO,
                       capture_output=True, timeout=300, check=False)
        for log in (cap.home / "logs").glob("*.log") if sys.exc_info()[0] is not None else ():
            print(f"--- {log.name}:\n{log.read_text()[-3000:]}", file=sys.stderr)
        shutil.rmtree(cap.base, ignore_errors=True)  # with the port-in-use example's second-home (nothing started)


if __name__ == "__main__":
    main()
