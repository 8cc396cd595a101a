"""myagent-ws-weather: a hook plugin that adds the ``weather-assistant`` agent.

Serve it with ``myagent-ws server --plugin weather``. The tools and their data ship with
the host as :mod:`myagent.demo.weather` (re-exported as :mod:`myagent_ws_weather.tools`);
``examples/ws_weather_agent.py`` imports them from there as well, so the agent file and the
plugin answer identically, and the example needs no plugin installed.
"""

from collections.abc import Callable
from typing import Any

from myagent import ReactAgent, create_react_agent
from myagent.demo.weather import GetCityInfoTool, GetWeatherTool
from myagent_ws import hookimpl

NAME = "weather-assistant"
DESCRIPTION = "Answers weather and city questions (北京, London…) in 中文 or English."
SYSTEM_PROMPT = (
    "You are a helpful weather assistant. Use get_weather for weather questions and "
    "get_city_info for questions about a city. Answer in the user's language, briefly."
)


def create_agent() -> ReactAgent:
    """A new weather assistant; the server calls it once per session (fresh memory)."""
    return create_react_agent(
        name=NAME,
        description=DESCRIPTION,
        tools=[GetWeatherTool(), GetCityInfoTool()],
        system_prompt=SYSTEM_PROMPT,
        max_steps=5,
    )


@hookimpl
def register_agents(register: Callable[..., Any]) -> None:
    """Contribute the agent when the plugin is loaded (``--plugin weather``)."""
    register(NAME, create_agent, description=DESCRIPTION)


__all__ = ["create_agent", "register_agents"]
