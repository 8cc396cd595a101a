from myagent import create_react_agent
from myagent.tool.base_tool import BaseTool, ToolResult

class GreetTool(BaseTool):
    name = "greet"
    description = "向用户问好"
    parameters = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "用户名"}
        },
        "required": ["name"]
    }
    
    async def execute(self, name: str) -> ToolResult:
        return ToolResult(output=f"Hello, {name}!")

agent = create_react_agent(
    name="greeter",
    tools=[GreetTool()],
    system_prompt="You are a friendly assistant.",
    max_steps=3
)
