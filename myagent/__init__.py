"""myagent: build LLM agents with tools; serve them with `myagent-ws server agent.py`.

from myagent import create_react_agent
from myagent.tool.base_tool import BaseTool, ToolResult
"""

from .agent import ReactAgent, create_react_agent
from .errors import AgentError, LLMError, MaxStepsError
from .events import (
    ConfirmRequest,
    FinalAnswer,
    StepEvent,
    TextDelta,
    Thinking,
    ToolCall,
    ToolFinished,
)
from .llm import Model, ModelReply, OpenAIModel, ToolCallRequest, model_from_env
from .offline import FunctionModel, OfflineModel
from .tool.base_tool import BaseTool, ToolResult

__all__ = [
    "AgentError",
    "BaseTool",
    "ConfirmRequest",
    "FinalAnswer",
    "FunctionModel",
    "LLMError",
    "MaxStepsError",
    "Model",
    "ModelReply",
    "OfflineModel",
    "OpenAIModel",
    "ReactAgent",
    "StepEvent",
    "TextDelta",
    "Thinking",
    "ToolCall",
    "ToolCallRequest",
    "ToolFinished",
    "ToolResult",
    "create_react_agent",
    "model_from_env",
]
