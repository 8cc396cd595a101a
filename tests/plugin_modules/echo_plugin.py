"""A hook plugin with agents, an extra route and an observer (all hooks in one module)."""

from aiohttp import web

from myagent import FunctionModel, create_react_agent
from myagent_ws import hookimpl

OBSERVED: list[tuple[str, dict]] = []


def create_echo():
    return create_react_agent(
        name="echo",
        model=FunctionModel(lambda messages, tools: "echo: " + messages[-1]["content"]),
        description="Repeats what you say.",
    )


@hookimpl
def register_agents(register):
    register("echo", create_echo, description="Repeats what you say (plugin).")


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "from echo_plugin"})


@hookimpl
def prepare_app(app, settings):
    app.router.add_get("/-/echo/hello", hello)


@hookimpl
async def observe_event(session_id, event):
    OBSERVED.append((session_id, dict(event)))
