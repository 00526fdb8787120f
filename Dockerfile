# Kling Video Bot: docker build -t kling-video-bot . && docker run --env-file .env -v kling-data:/data kling-video-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

RUN useradd --create-home --uid 10001 bot && mkdir /data && chown bot:bot /data

# Dependencies first, so a source change doesn't reinstall them.
WORKDIR /app
COPY pyproject.toml README.md ./
RUN mkdir -p bot/kling bot/images cogs \
    && touch bot/__init__.py bot/kling/__init__.py bot/images/__init__.py cogs/__init__.py \
    && pip install . && pip uninstall -y kling-video-bot && rm -rf bot cogs build ./*.egg-info

COPY bot ./bot
COPY cogs ./cogs

USER bot
# The bot runs from the volume, so the relative defaults (DATABASE_URL, MEDIA_DIR: data/…)
# and the same lines copied from .env.example all land in /data.
WORKDIR /data
VOLUME ["/data"]
# `python -m bot` handles SIGTERM: it stops taking work, finishes its writes and exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
