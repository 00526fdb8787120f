# Kling Video Bot. With compose: `docker compose up -d --build` (see compose.yaml and the README).
# Alone: docker build -t kling-video-bot . && docker run -d --name kling-video-bot \
#   --restart unless-stopped --stop-timeout 30 --env-file .env -v kling-data:/data kling-video-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

RUN groupadd --gid 10001 bot && useradd --create-home --uid 10001 --gid 10001 bot \
    && mkdir /data && chown 10001:10001 /data

# The locked dependencies first: every package pinned with its hashes (`make lock` refreshes
# the file), so two builds get the same packages and a source change doesn't reinstall them.
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

COPY LICENSE ./
COPY bot ./bot
COPY cogs ./cogs

USER 10001:10001
# The bot runs from the volume, so the relative defaults (DATABASE_URL, MEDIA_DIR: data/…)
# and the same lines copied from .env.example all land in /data.
WORKDIR /data
VOLUME ["/data"]
# The callback listener, when CALLBACK_LISTEN_PORT=8080 is set: publish it only behind a TLS
# proxy that serves CALLBACK_PUBLIC_URL (the provider calls https URLs).
EXPOSE 8080
# Unhealthy when the engine's scheduler hasn't written its heartbeat for 2 minutes.
HEALTHCHECK --interval=60s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "-m", "bot", "health"]
# `python -m bot` handles SIGTERM: it stops taking work, finishes its writes and exits (give it
# up to 30 s: `--stop-timeout 30`, or `stop_grace_period` in compose.yaml).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
