"""An AsyncAPI 3.0 document of the protocol, generated from schemas/ so it cannot drift:
every client and server event is a message whose payload is its schema."""

from __future__ import annotations

from typing import Any


def build_asyncapi(schemas: dict[str, dict[str, Any]], version: str) -> dict[str, Any]:
    """The AsyncAPI document, from the server's point of view (it receives user.* events
    and sends system.* and agent.* events on one channel at `/`)."""
    components = {name: _inline(name, schema) for name, schema in schemas.items()}
    events = [name for name in schemas if name != "envelope"]
    messages = {
        name: {
            "name": name,
            "title": schemas[name].get("title", name),
            "summary": schemas[name].get("description", ""),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        for name in events
    }
    operations = {}
    for name in events:
        action = "receive" if name.startswith("user.") else "send"
        operations[f"{action}_{name.replace('.', '_')}"] = {
            "action": action,
            "channel": {"$ref": "#/channels/root"},
            "summary": schemas[name].get("title", name),
            "messages": [{"$ref": f"#/channels/root/messages/{name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "myagent-ws",
            "version": version,
            "description": (
                "One WebSocket endpoint serving named LLM agents. Clients send user.* events; "
                "the server streams system.* and agent.* events. Text frames, one JSON "
                "object each; session events carry a per-session seq."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:8080",
                "protocol": "ws",
                "description": "`myagent-ws server agent.py` on its default port.",
            }
        },
        "channels": {
            "root": {
                "address": "/",
                "title": "The agent endpoint",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in events},
            }
        },
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
    }


def _inline(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every reference pointing inside the AsyncAPI document
    (`envelope.json#/x` and, in envelope.json, `#/x` become `#/components/schemas/envelope/x`)
    and without its own $id/$schema."""

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items() if k not in ("$id", "$schema")}
            ref = out.get("$ref")
            if isinstance(ref, str):
                target, _, pointer = ref.partition("#")
                target = target.removesuffix(".json") or name
                out["$ref"] = f"#/components/schemas/{target}{pointer}"
            return out
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    return rewrite(schema)
