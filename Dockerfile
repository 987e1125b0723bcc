# celery-ws server (and, with another command, a worker of your app).
#   docker build -t celery-ws .
#   docker run -e CELERY_WS_SECRET=... -e CELERY_WS_REDIS_URL=redis://redis:6379/0 -p 8765:8765 celery-ws
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY celery_ws ./celery_ws
RUN pip install .
# the example tasks, for docker-compose.yml; your image copies your own project
COPY examples ./examples

RUN useradd --create-home --uid 10001 celeryws
USER celeryws

EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEBSOCKET_PORT', '8765'), timeout=2)"]

# Open mode is refused on 0.0.0.0: set CELERY_WS_SECRET (token mode), or
# pass --insecure only behind something that authenticates users.
CMD ["celery-ws", "serve", "--host", "0.0.0.0"]
