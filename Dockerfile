# The NeonBlue image used by compose.yaml for the router and the stream processor.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY mcp_router mcp_router
COPY mcp_servers mcp_servers
COPY stream_processor stream_processor
# torch first, pinned, from PyTorch's CPU index: from PyPI alone, `pip install torch==2.13.0` on Linux takes
# the CUDA build and several GB of nvidia wheels. (`make` needs no index on the build machine only because
# its pip configuration points at a local wheel directory holding torch-2.13.0+cpu.)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" "torch==2.13.0" \
    && python -c "import torch; assert '+cpu' in torch.__version__, torch.__version__" \
    && pip install --no-cache-dir ".[embeddings]"
RUN useradd --system --home /var/lib/neonblue neonblue && mkdir -p /var/lib/neonblue && chown neonblue /var/lib/neonblue
USER neonblue
EXPOSE 8765
CMD ["neonblue", "serve", "--http"]
