# Kling Video Bot: docker build -t kling-video-bot . && docker run --env-file .env -v kling-data:/data kling-video-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/kling-bot.sqlite3 \
    MEDIA_DIR=/data/media

RUN useradd --create-home --uid 10001 bot && mkdir /data && chown bot:bot /data
WORKDIR /app

# Dependencies first, so a source change doesn't reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p bot/kling cogs && touch bot/__init__.py bot/kling/__init__.py cogs/__init__.py \
    && pip install . && pip uninstall -y kling-video-bot && rm -rf bot cogs

COPY bot ./bot
COPY cogs ./cogs

USER bot
VOLUME ["/data"]
# `python -m bot` handles SIGTERM: it stops taking work, finishes its writes and exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
