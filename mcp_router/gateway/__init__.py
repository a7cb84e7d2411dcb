"""The gateway: the MCP front door every request passes through.

`router.py` holds the tool catalogue and dispatch (one low-level MCP server in front of every
backend), `backends.py` one client per server (in-process, stdio or HTTP) with its timeout,
counters and circuit breaker, `router_tools.py` the router's own tools (status, catalogue,
`route_query`), `query_routing.py` the plain-language request classification, `metrics.py`
the Prometheus counters. It imports no other room of mcp_router.
"""
