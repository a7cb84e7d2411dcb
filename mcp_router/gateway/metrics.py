"""Prometheus metrics of the router (served at /metrics on the HTTP app)."""

from prometheus_client import Counter, Gauge, Histogram

TOOL_CALLS = Counter("neonblue_tool_calls_total", "Tool calls through the router", ["tool", "outcome"])
TOOL_LATENCY = Histogram(
    "neonblue_tool_latency_seconds",
    "Tool call latency through the router",
    ["tool"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKEND_HEALTHY = Gauge("neonblue_backend_healthy", "1 when the backend answers and its circuit is closed", ["backend"])
STREAM_LAG = Gauge("neonblue_stream_lag", "Consumer lag per topic partition", ["topic", "partition"])
STREAM_EVENTS = Counter("neonblue_stream_events_total", "Events handled by the stream processor", ["outcome"])


_children: dict[tuple[str, str], tuple] = {}


def record_call(tool: str, outcome: str, seconds: float) -> None:
    """Count one tool call; label children are cached (labels() costs a lock and a lookup)."""
    key = (tool, outcome)
    child = _children.get(key)
    if child is None:
        child = _children[key] = (TOOL_CALLS.labels(tool=tool, outcome=outcome), TOOL_LATENCY.labels(tool=tool))
    child[0].inc()
    child[1].observe(seconds)
