# syntax=docker/dockerfile:1
# incident-bot for Cloud Run. Build: docker build -t incident-bot .
# Secrets (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, ...) come from the runtime
# environment / Secret Manager, never from this file.

# --- builder: install the app and its dependencies into a self-contained venv ---
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
COPY . .
# A regular (non-editable) install, so the venv doesn't point back at /src.
RUN /opt/venv/bin/pip install .

# --- runtime: just Python, the venv and an unprivileged user ---
FROM python:3.11-slim

RUN groupadd --system --gid 10001 incidentbot \
 && useradd --system --uid 10001 --gid incidentbot --home-dir /app --create-home \
        --shell /usr/sbin/nologin incidentbot

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
# Numeric uid so runtimes that enforce "run as non-root" can verify it.
USER 10001:10001
EXPOSE 8080

# Exec form: the app is PID 1 and gets SIGTERM from Cloud Run directly.
# `serve` runs the database migrations before it starts listening on $PORT.
CMD ["incident-bot", "serve"]
