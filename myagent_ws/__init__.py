"""myagent-ws: serve Python LLM agents over one WebSocket endpoint."""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
