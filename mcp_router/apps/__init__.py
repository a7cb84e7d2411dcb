"""The apps: clients of the router. `cli.py` (the `neonblue` command), `demo.py` (`neonblue demo`)
and `chat/` (`neonblue chat` / `ask`) speak MCP or REST to a router the runtime opens or attaches to.
"""
