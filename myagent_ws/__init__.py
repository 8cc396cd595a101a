"""myagent-ws: serve Python LLM agents over one WebSocket endpoint."""

__version__ = "0.1.0"
