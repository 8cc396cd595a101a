"""myagent-ws-calculator: the ``calculator`` agent, packaged without any hook code.

The distribution's entry point ``calculator = "myagent_ws_calculator:create_agent"`` in the
group ``myagent_ws.agents`` points straight at :func:`create_agent`; ``myagent-ws server
--plugin calculator`` calls it once per session.
"""

from myagent import ReactAgent, create_react_agent

from .tools import CalculateTool, ConvertUnitsTool


def create_agent() -> ReactAgent:
    """A new calculator agent with its own memory (one per session)."""
    return create_react_agent(
        name="calculator",
        description="Exact arithmetic and unit conversion (length, mass, temperature).",
        # calculate first: the offline model gives ties to the first tool.
        tools=[CalculateTool(), ConvertUnitsTool()],
        system_prompt=(
            "You are a precise calculator. For any arithmetic call calculate with the bare "
            "expression; for unit conversions call convert_units. Never compute in your "
            "head. Answer in the user's language with the result."
        ),
        max_steps=5,
    )


__all__ = ["create_agent"]
