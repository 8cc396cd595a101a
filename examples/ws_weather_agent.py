"""Weather assistant: the seed README's example agent.

    myagent-ws server examples/ws_weather_agent.py --port 8080

Ask "北京今天天气怎么样？" or "What's the weather in Paris?". The data is built in (no
weather API key needed), so it answers the same way every time; with no LLM configured
the built-in offline model picks the tool and the city from your words.

The tools are demo tools that ship with the project (`myagent.demo.weather`), so this file
serves after a plain `pip install .`. The optional myagent-ws-weather plugin package
(plugins/weather) serves the same agent as `myagent-ws server --plugin weather`; this file
shows the other way: an agent file is just a module with a module-level `agent`.
"""

from myagent import create_react_agent
from myagent.demo.weather import GetCityInfoTool, GetWeatherTool

# The server clones this agent for every session: each session gets its own memory.
agent = create_react_agent(
    name="weather-assistant",
    description="Answers weather and city questions (北京, London…) in 中文 or English.",
    # The offline model breaks ties by order, so get_weather comes first.
    tools=[GetWeatherTool(), GetCityInfoTool()],
    # What a real LLM is told; the offline model ignores it.
    system_prompt=(
        "You are a helpful weather assistant. Use get_weather for weather questions and "
        "get_city_info for questions about a city. Answer in the user's language, briefly."
    ),
    # Bounds the LLM calls of one turn: a tool call and an answer need two.
    max_steps=5,
)
