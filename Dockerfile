FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir /app /app/plugins/weather /app/plugins/calculator
EXPOSE 8080
# Mount agent files at /app/agents and pass them instead of the example.
CMD ["myagent-ws", "server", "examples/ws_weather_agent.py", "--host", "0.0.0.0", "--port", "8080"]
