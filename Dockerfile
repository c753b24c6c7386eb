# One image for every P2Engine service and the CLI; the command picks the service.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
COPY clients clients
RUN uv sync --frozen --no-dev --all-packages
COPY config config
ENV PATH="/app/.venv/bin:$PATH" P2E_CONFIG_DIR=/app/config P2E_DATA_DIR=/data
EXPOSE 50061 50062 50063 50064 50065
CMD ["p2engine", "--help"]
