# The NeonBlue image used by compose.yaml for the router and the stream processor.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY mcp_router mcp_router
COPY mcp_servers mcp_servers
COPY stream_processor stream_processor
# torch first and pinned (CPU). Set PIP_EXTRA_INDEX_URL to a CPU wheel index to keep CUDA wheels out.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir ".[embeddings]"
RUN useradd --system --home /var/lib/neonblue neonblue && mkdir -p /var/lib/neonblue && chown neonblue /var/lib/neonblue
USER neonblue
EXPOSE 8765
CMD ["neonblue", "serve", "--http"]
