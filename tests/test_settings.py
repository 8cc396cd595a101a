"""Every Settings field is a `myagent-ws server` flag and a MYAGENT_WS_ environment variable,
generated from the dataclass: flag > environment > dataclass default. In-process (CliRunner),
with the server itself stubbed out: these tests are about option parsing only."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import myagent_ws.app
from myagent_ws import cli as cli_module
from myagent_ws.cli import cli, field_help, flag_name
from myagent_ws.registry import AgentRegistry
from myagent_ws.settings import Settings

FIELDS = dataclasses.fields(Settings)
HINTS = typing.get_type_hints(Settings)


def flag(field: dataclasses.Field[Any]) -> str:
    return flag_name(field.name, repeatable=typing.get_origin(HINTS[field.name]) is tuple)


def text(value: Any) -> str:
    """A value as an environment variable holds it (a tuple: comma-separated)."""
    return ",".join(value) if isinstance(value, tuple) else str(value)


def env(field: dataclasses.Field[Any]) -> str:
    return "MYAGENT_WS_" + field.name.upper()


def base_type(field: dataclasses.Field[Any]) -> Any:
    if typing.get_origin(HINTS[field.name]) is typing.Literal:
        return typing.get_args(HINTS[field.name])  # the choices
    return next(
        t for t in typing.get_args(HINTS[field.name]) or [HINTS[field.name]] if t is not type(None)
    )


def sample(field: dataclasses.Field[Any], step: int) -> Any:
    """A valid value other than the default (step 1 for the env var, 2 for the flag). Twice
    the default and a bit keeps every cross-field rule of Settings.__post_init__ true."""
    kind, default = base_type(field), field.default
    if isinstance(kind, tuple):  # a Literal: the choices other than the default, in turn
        others = [choice for choice in kind if choice != default]
        return others[(step - 1) % len(others)]
    if field.name == "store":  # a URL, checked by Settings
        return f"redis://127.0.0.1:6379/{step}"
    if field.name == "auth_tokens_file":  # read at start-up: it must exist
        path = Path(tempfile.gettempdir()) / f"myagent-ws-test-tokens-{step}"
        path.write_text(f"user{step}:token-{step}\n", encoding="utf-8")
        return str(path)
    if field.name == "allowed_origins":  # origins, checked by Settings
        return ("https://a.example", f"http://localhost:{step}") if step == 1 else ("*",)
    if field.name == "forwarded_allow_ips":  # addresses and networks, checked by Settings
        return ("10.0.0.0/8", f"192.0.2.{step}") if step == 1 else ("::1",)
    if HINTS[field.name] == tuple[str, ...]:  # several from the environment, one by flag
        return (f"{field.name}-{step}a", f"{field.name}-{step}b") if step == 1 else ("x",)
    if kind is str:
        return f"{field.name}-{step}"
    if kind is int:
        return (default or 4000) * 2 + step
    if kind is float:
        return (default or 1.0) * 2 + step + 0.5
    raise AssertionError(f"no sample for Settings.{field.name}: {kind}")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Any:
    """run(*args, env={...}) -> (result, the Settings `server` would serve with, or None)."""
    for name in list(os.environ):
        if name.startswith("MYAGENT_WS_"):
            monkeypatch.delenv(name)
    served: list[Settings] = []

    class Offline:
        def describe(self) -> dict[str, Any]:
            return {"offline": True}

    monkeypatch.setattr(cli_module, "_load", lambda *_args: (AgentRegistry(), None))
    monkeypatch.setattr(myagent_ws.app, "model_for", lambda _settings: Offline())
    build = myagent_ws.app.create_app

    def create_app(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        served.append(settings)  # what the CLI made of flags and variables
        return build(settings, *args, **kwargs)  # the banner reads its auth; nothing runs it

    monkeypatch.setattr(myagent_ws.app, "create_app", create_app)
    monkeypatch.setattr("aiohttp.web.run_app", lambda *_a, **_k: None)
    monkeypatch.setattr("myagent_ws.reload.install", lambda *_a, **_k: "reload: on")

    def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[Any, Settings | None]:
        result = CliRunner().invoke(cli, ["server", *args], env=env)
        return result, (served.pop() if served else None)

    return invoke


def test_every_field_has_help_text():
    helps = field_help(Settings)
    for field in FIELDS:
        assert helps.get(field.name), f"Settings.{field.name} has no comment above it"


def test_every_field_is_in_server_help(run):
    result, _ = run("--help")
    assert result.exit_code == 0, result.output
    for field in FIELDS:
        assert flag(field) in result.output, f"no {flag(field)} in server --help"
        assert env(field) in result.output, f"no {env(field)} in server --help"
    assert "[default: 8080]" in result.output


def test_nothing_given_means_the_dataclass_defaults(run):
    result, settings = run()
    assert result.exit_code == 0, result.output
    assert settings == Settings()


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_env_var_sets_the_field_and_the_flag_beats_it(run, field):
    if base_type(field) is bool:
        for env_value, args, expected in [
            ("yes", [], True),
            ("1", ["--no-" + flag(field)[2:]], False),
            ("0", [flag(field)], True),
        ]:
            result, settings = run(*args, env={env(field): env_value})
            assert result.exit_code == 0, result.output
            assert getattr(settings, field.name) is expected, (env_value, args)
        return
    from_env, from_flag = sample(field, 1), sample(field, 2)
    result, settings = run(env={env(field): text(from_env)})
    assert result.exit_code == 0, result.output
    assert getattr(settings, field.name) == from_env
    assert settings == dataclasses.replace(Settings(), **{field.name: from_env})
    result, settings = run(flag(field), text(from_flag), env={env(field): text(from_env)})
    assert result.exit_code == 0, result.output
    assert getattr(settings, field.name) == from_flag


@pytest.mark.parametrize("value", ["0", "false", "no"])
def test_false_env_values_turn_a_flag_off(run, value):
    _, settings = run(env={"MYAGENT_WS_DEBUG": value})
    assert settings.debug is False


def test_old_env_names_still_work_and_the_new_ones_win(run):
    old = {"MYAGENT_MODEL": "m-old", "OPENAI_BASE_URL": "http://old", "OPENAI_API_KEY": "k-old"}
    _, settings = run(env=old)
    assert (settings.model, settings.llm_base_url, settings.llm_api_key) == (
        "m-old",
        "http://old",
        "k-old",
    )
    new = {"MYAGENT_WS_MODEL": "m-new", "MYAGENT_WS_LLM_BASE_URL": "http://new"}
    _, settings = run(env={**old, **new})
    assert (settings.model, settings.llm_base_url) == ("m-new", "http://new")
    _, settings = run("--model", "m-flag", env={**old, **new})
    assert settings.model == "m-flag"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--max-sessions", "abc"], {}, "'--max-sessions'"),
        ([], {"MYAGENT_WS_PORT": "x"}, "MYAGENT_WS_PORT"),
        (["--rate-limit-per-s", "fast"], {}, "'--rate-limit-per-s'"),
        ([], {"MYAGENT_WS_DEBUG": "maybe"}, "MYAGENT_WS_DEBUG"),
        (["--max-event-bytes", "0"], {}, "'--max-event-bytes'"),
        ([], {"MYAGENT_WS_REPLAY_BUFFER_BYTES": "5"}, "MYAGENT_WS_REPLAY_BUFFER_BYTES"),
    ],
    ids=["type-flag", "type-env", "float", "bool-env", "rejected", "cross-field"],
)
def test_bad_value_exits_2_with_one_line_naming_the_option(run, args, env, named):
    result, settings = run(*args, env=env)
    assert result.exit_code == 2 and settings is None
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and named in errors[0], result.output
    assert "Traceback" not in result.output


def test_agents_and_plugins_keep_their_own_debug():
    result = CliRunner().invoke(cli, ["agents", "--debug", "--help"])
    assert result.exit_code == 0 and "--debug" in result.output
    result = CliRunner().invoke(cli, ["plugins", "--help"])
    assert result.exit_code == 0 and "--debug" in result.output
