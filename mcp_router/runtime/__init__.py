"""The runtime: the one composition root and the processes it runs.

`serving.py` wires the servers, the gateway, the web front and the stream processor into one
process (stdio or HTTP); `stack.py` is `neonblue up | down | status`; `embedded.py` the embedded
PostgreSQL and Kafka broker; `stream_main.py` the stream processor on its own (`neonblue stream`).
"""
