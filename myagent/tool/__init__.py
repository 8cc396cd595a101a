"""Tools an agent can call."""

from .base_tool import BaseTool, ToolResult

__all__ = ["BaseTool", "ToolResult"]
