# The myagent-ws server with the example plugins, serving the weather example on the
# built-in offline model (set OPENAI_API_KEY / OPENAI_BASE_URL for a real LLM). Mount
# your agent files (e.g. at /app/agents) and pass them instead of the example. Every
# setting is a MYAGENT_WS_* variable: deploy/docker-compose.yml and deploy/k8s set
# MYAGENT_WS_STORE=redis://HOST:6379/0 so that several replicas share their sessions.
FROM python:3.11-slim

# Logs unbuffered; no .pyc written at run time (the code is read-only for the user).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
# Every dependency has a binary wheel for this image, so no compiler is installed and none
# is left behind; --no-cache-dir keeps pip's cache out of the layer. The code stays owned
# by root: the server's user can read it, not change it.
RUN pip install --no-cache-dir /app /app/plugins/weather /app/plugins/calculator \
    && groupadd --system --gid 10001 myagent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home myagent

# Listen on every interface of the container, on the port below; sessions live in this
# process's memory unless MYAGENT_WS_STORE names a Redis.
ENV MYAGENT_WS_HOST=0.0.0.0 \
    MYAGENT_WS_PORT=8080 \
    MYAGENT_WS_STORE=memory

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080

# Liveness with the image's own Python (slim has no curl): urlopen raises, so the exit
# status is 1, on a refused connection, a timeout or any status but 2xx.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('MYAGENT_WS_HEALTH_PORT') or os.environ.get('MYAGENT_WS_PORT') or '8080'), timeout=2)"]

# On SIGTERM (docker stop) the server drains: give it drain_timeout_s + shutdown_timeout_s
# (30 + 5 s by default) with `docker stop -t 40`.
CMD ["myagent-ws", "server", "examples/ws_weather_agent.py"]
