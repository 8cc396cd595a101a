"""A plugin whose register_agents raises."""

from myagent_ws import hookimpl


@hookimpl
def register_agents(register):
    raise RuntimeError("cannot reach the agent catalogue")
