"""The key data of a tool's result: names, verdicts, numbers, in a few fields and one line of words.

`neonblue ask --json` carries these (`data`), and the offline answer's lines are made from them:
every number is the tool's own, nothing is interpreted beyond it.
"""

from __future__ import annotations

from typing import Any

from mcp_router.apps.chat.tools import ToolCall

MAX_ITEMS = 10


def pct(value: Any) -> str:
    """A fraction as a signed percent (0.052 → '+5.2%'); '–' when there is none."""
    return "–" if not isinstance(value, int | float) else f"{value * 100:+.1f}%"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def facts(call: ToolCall) -> dict[str, Any]:
    """Key fields of one call's result (empty when it failed; the error says why)."""
    data = call.structured if isinstance(call.structured, dict) and not call.is_error else None
    if data is None:
        return {}
    handler = _HANDLERS.get(call.tool)
    if handler is not None:
        return handler(data)
    scalars = {k: v for k, v in data.items() if isinstance(v, str | int | float | bool) or v is None}
    lists = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    return {**dict(list(scalars.items())[:8]), **{f"{k}_count": n for k, n in lists.items()}}


def sentence(call: ToolCall) -> str:
    """One line of what came back, from the facts."""
    if call.is_error:
        return f"{call.tool} failed: {call.text}"
    f = facts(call)
    render = _SENTENCES.get(call.tool)
    if render is not None and f:
        return render(f)
    shown = ", ".join(f"{k} {_num(v)}" for k, v in f.items() if not isinstance(v, list | dict))
    return f"{call.tool}: {shown or 'no result'}"


# ---------------------------------------------------------------- per tool


def _analysis(data: dict[str, Any]) -> dict[str, Any]:
    verdict = data.get("verdict") if isinstance(data.get("verdict"), dict) else {}
    out: dict[str, Any] = {"experiment": data.get("experiment_key"), "name": data.get("name"),
                           "verdict": verdict.get("verdict"), "variant": verdict.get("variant"),
                           "rule": verdict.get("rule"), "confidence": verdict.get("confidence"),
                           "metric": data.get("primary_metric"), "days_observed": data.get("days_observed")}
    out["users"] = {v.get("key"): v.get("users") for v in data.get("variants") or [] if isinstance(v, dict)}
    arms = []
    for m in data.get("metrics") or []:
        if isinstance(m, dict) and m.get("role") == "primary":
            arms.append({k: m.get(k) for k in ("variant", "control", "mean", "control_mean", "relative_lift",
                                               "p_value_sequential", "chance_to_win", "significant")})
    if arms:
        out["arms"] = arms[:MAX_ITEMS]
    srm = data.get("srm")
    if isinstance(srm, dict):
        out["srm_p_value"] = srm.get("p_value")
    return {k: v for k, v in out.items() if v is not None}


def _analysis_sentence(f: dict[str, Any]) -> str:
    line = f"{f.get('experiment', '?')} ({f.get('name', '')}): verdict {f.get('verdict', '?')}"
    if f.get("variant"):
        line += f" for {f['variant']}"
    for arm in f.get("arms", []):
        if arm.get("relative_lift") is not None:
            line += (f"; {arm.get('variant')} vs {arm.get('control')}: {f.get('metric', '')} "
                     f"{_num(arm.get('control_mean'))} → {_num(arm.get('mean'))} ({pct(arm['relative_lift'])}")
            if arm.get("p_value_sequential") is not None:
                line += f", always-valid p {arm['p_value_sequential']:.3g}"
            if arm.get("chance_to_win") is not None:
                line += f", chance to win {arm['chance_to_win']:.0%}"
            line += ")"
    if f.get("rule"):
        line += f". {f['rule']}"
    return line


def _listing(data: dict[str, Any]) -> dict[str, Any]:
    items = data.get("items") or []
    return {"count": len(items), "experiments": [
        {k: i.get(k) for k in ("key", "name", "status", "primary_metric") if k in i} for i in items[:MAX_ITEMS * 2]]}


def _listing_sentence(f: dict[str, Any]) -> str:
    if not f["experiments"]:
        return "No experiment matches."
    names = "; ".join(f"{e['key']} ({e.get('name', '')}, {e.get('status', '')})" for e in f["experiments"])
    return f"{f['count']} experiments: {names}"


def _hits(data: dict[str, Any]) -> dict[str, Any]:
    hits = data.get("hits") or []
    out = []
    for h in hits[:MAX_ITEMS]:
        meta = h.get("metadata") or {}
        item = {"id": meta.get("experiment_key") or meta.get("pattern_id") or h.get("id"),
                "name": meta.get("name") or meta.get("description") or (h.get("document") or "")[:80],
                "similarity": h.get("similarity")}
        for k in ("lift", "improvement", "outcome", "winner", "primary_metric"):
            if meta.get(k) is not None:
                item[k] = meta[k]
        out.append(item)
    return {"count": len(hits), "hits": out}


def _hits_sentence(f: dict[str, Any]) -> str:
    if not f["hits"]:
        return "Nothing similar found."
    lines = [f"{f['count']} found, most similar first:"]
    for h in f["hits"][:5]:
        extra = []
        if h.get("lift") is not None:
            extra.append(f"lift {pct(h['lift'])}")
        if h.get("improvement") is not None:
            extra.append(f"improvement {h['improvement'] * 100:+g}%")
        if h.get("outcome"):
            extra.append(str(h["outcome"]))
        extra.append(f"similarity {h['similarity']:.2f}" if isinstance(h.get("similarity"), float) else "")
        lines.append(f"  - {h['id']}: {h['name']}" + (f" ({', '.join(e for e in extra if e)})" if extra else ""))
    return "\n".join(lines)


def _variant_stats(data: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for v in data.get("variants") or []:
        if isinstance(v, dict):
            rows[v.get("variant")] = {"variant": v.get("variant"), "users": v.get("users")}
    for st in data.get("statistics") or []:
        if isinstance(st, dict) and st.get("variant") in rows and st.get("mean") is not None:
            rows[st["variant"]][f"{st.get('metric')}_mean"] = st["mean"]
    variants = list(rows.values())[:MAX_ITEMS]
    return {"experiment": data.get("experiment_key"), "variants": variants, "segment": data.get("segment"),
            "total_users": sum(r.get("users") or 0 for r in variants),
            "window": [data.get("window_start"), data.get("window_end")]}


def _variant_stats_sentence(f: dict[str, Any]) -> str:
    parts = []
    for r in f["variants"]:
        extra = ", ".join(f"{k[:-5]} mean {_num(v)}" for k, v in r.items() if k.endswith("_mean"))
        parts.append(f"{r['variant']} {_num(r.get('users') or 0)} users" + (f" ({extra})" if extra else ""))
    seg = f" in segment {f['segment']}" if f.get("segment") else ""
    return f"{f.get('experiment')}{seg}: {f['total_users']:,} exposed users; " + "; ".join(parts)


def _plan(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("sample_size_per_variant", "total_sample_size", "sample_size_per_variant_sequential", "traffic_per_day",
            "duration_days", "duration_days_sequential", "mde", "alpha", "target_power", "experiment_type")
    out = {k: data.get(k) for k in keys if data.get(k) is not None}
    if isinstance(data.get("baseline"), dict):
        out["baseline"] = data["baseline"].get("mean")
    if isinstance(data.get("primary_metric"), dict):
        out["primary_metric"] = data["primary_metric"].get("name")
    return out


def _plan_sentence(f: dict[str, Any]) -> str:
    return (f"To detect a {f.get('mde', 0):.1%} relative change on a baseline of {_num(f.get('baseline'))} "
            f"(alpha {_num(f.get('alpha'))}, power {_num(f.get('target_power'))}): "
            f"{_num(f.get('sample_size_per_variant'))} users per variant, {_num(f.get('total_sample_size'))} in all, "
            f"{_num(f.get('duration_days'))} days at {_num(f.get('traffic_per_day'))} users/day "
            f"({_num(f.get('sample_size_per_variant_sequential'))} per variant if you check results as they come).")


def _guardrails(data: dict[str, Any]) -> dict[str, Any]:
    checks = [c for c in data.get("guardrails") or [] if isinstance(c, dict)]
    verdict = data.get("verdict") if isinstance(data.get("verdict"), dict) else {}
    return {"experiment": data.get("experiment_key"), "environment": data.get("environment"),
            "verdict": verdict.get("verdict"), "rule": verdict.get("rule"), "action": data.get("action"),
            "checks": [{k: c.get(k) for k in ("metric", "variant", "status", "relative_lift", "p_harm")}
                       for c in checks[:MAX_ITEMS]],
            "failing": [f"{c.get('metric')} ({c.get('variant')})" for c in checks if c.get("status") == "fail"]}


def _guardrails_sentence(f: dict[str, Any]) -> str:
    failing = ", ".join(f["failing"]) or "none"
    line = f"{f.get('experiment')}: {len(f['checks'])} checks under the {f.get('environment')} policy, failing: {failing}"
    if f.get("action"):
        line += f"; action {f['action']}"
    return line + (f". {f['rule']}" if f.get("rule") else "")


def _recommend(data: dict[str, Any]) -> dict[str, Any]:
    actions = data.get("actions") or []
    verdict = data.get("verdict")
    verdict = verdict.get("verdict") if isinstance(verdict, dict) else verdict
    return {"experiment": data.get("experiment_key"), "verdict": verdict, "actions": [
        {k: a.get(k) for k in ("rank", "action", "variant", "title", "confidence")} for a in actions[:5]]}


def _recommend_sentence(f: dict[str, Any]) -> str:
    lines = [f"{f.get('experiment')}: verdict {f.get('verdict')}, {len(f['actions'])} actions, most urgent first:"]
    for a in f["actions"]:
        variant = f" {a['variant']}" if a.get("variant") else ""
        lines.append(f"  {a['rank']}. {a['action']}{variant}: {a['title']} (confidence {a['confidence']:.2f})")
    return "\n".join(lines)


def _query(data: dict[str, Any]) -> dict[str, Any]:
    columns = [c.get("name") for c in data.get("columns") or []]
    rows = data.get("rows") or []
    return {"columns": columns, "rows": rows[:MAX_ITEMS * 2], "row_count": len(rows)}


def _query_sentence(f: dict[str, Any]) -> str:
    if not f["rows"]:
        return "No rows."
    body = "; ".join(", ".join(f"{c} {_num(v)}" for c, v in zip(f["columns"], row, strict=False))
                     for row in f["rows"][:8])
    return f"{f['row_count']} rows: {body}"


def _segments(data: dict[str, Any]) -> dict[str, Any]:
    cells = data.get("segment_differences") or []
    return {"experiment": data.get("experiment_key"), "window": [data.get("window_start"), data.get("window_end")],
            "segments": [{k: c.get(k) for k in ("dimension", "segment", "variant", "metric", "relative_lift",
                                                "z_score", "variant_users", "control_users")}
                         for c in cells[:MAX_ITEMS]]}


def _experiment(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) for k in ("key", "name", "status", "type", "hypothesis") if data.get(k) is not None} | {
        "variants": [v.get("key") for v in data.get("variants") or []],
        "primary_metric": (data.get("primary_metric") or {}).get("name")}


def _experiment_sentence(f: dict[str, Any]) -> str:
    return (f"{f.get('key')} ({f.get('name')}, {f.get('status')}): variants {', '.join(f['variants'])}; primary "
            f"metric {f.get('primary_metric')}" + (f"; hypothesis: {f['hypothesis']}" if f.get("hypothesis") else ""))


_HANDLERS = {
    "analyze_experiment_performance": _analysis, "list_experiments": _listing,
    "semantic_experiment_search": _hits, "search_optimization_patterns": _hits, "find_similar_user_journeys": _hits,
    "get_variant_statistics": _variant_stats, "plan_experiment": _plan, "evaluate_guardrails": _guardrails,
    "recommend_experiment_optimization": _recommend, "clickhouse_query": _query, "postgres_query": _query,
    "generate_analytics_insights": _segments, "get_experiment": _experiment,
}
_SENTENCES = {
    "analyze_experiment_performance": _analysis_sentence, "list_experiments": _listing_sentence,
    "semantic_experiment_search": _hits_sentence, "search_optimization_patterns": _hits_sentence,
    "find_similar_user_journeys": _hits_sentence, "get_variant_statistics": _variant_stats_sentence,
    "evaluate_guardrails": _guardrails_sentence, "recommend_experiment_optimization": _recommend_sentence,
    "clickhouse_query": _query_sentence, "postgres_query": _query_sentence, "get_experiment": _experiment_sentence,
    "plan_experiment": _plan_sentence,
}
