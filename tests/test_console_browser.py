"""The web console in a real browser: Debian's Chromium, driven by Playwright's async API,
against a real server on a loopback port. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Locator, Page, async_playwright, expect

from myagent import FunctionModel, create_react_agent
from myagent_ws.keys import CONNECTIONS
from tests.agents import WaitTool, waiting_agent
from tests.conftest import GREETER, ROOT, WEATHER, reference

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FOUND = CHROMIUM.exists()
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts" / "screenshots"
BEIJING = "北京今天天气怎么样？"
expect.set_options(timeout=10_000)


@asynccontextmanager
async def browser(server: Any) -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh Chromium page on the console, and the problems seen while it ran: console
    errors, page errors, failed requests, non-2xx responses, any request off loopback."""
    assert CHROMIUM_FOUND, (
        f"{CHROMIUM} is missing: install Debian's chromium package (CI's .ci/run does)"
    )
    problems: list[str] = []

    def on_request(request: Any) -> None:
        host = urlsplit(request.url).hostname
        if not request.url.startswith("data:") and host not in ("127.0.0.1", "localhost"):
            problems.append(f"request off loopback: {request.url}")

    def on_response(response: Any) -> None:
        # 304: the browser revalidating a cached static file on reload.
        if not (200 <= response.status < 300 or response.status == 304):
            problems.append(f"HTTP {response.status}: {response.url}")

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await chromium.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
            page.on("request", on_request)
            page.on("response", on_response)
            await page.goto(str(server.make_url("/")))
            await expect(page.get_by_test_id("conn-state")).to_have_attribute(
                "data-state", "connected"
            )
            yield page, problems
        finally:
            await chromium.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def start_session(page: Page, agent: str | None = None) -> Locator:
    """Pick the agent (if named), press Start session; the new session's panel."""
    tabs = page.get_by_test_id("session-tab")
    before = await tabs.count()
    if agent:
        await page.locator(f'.agent-card[data-agent="{agent}"]').click()
    await page.get_by_test_id("start-session").click()
    await expect(tabs).to_have_count(before + 1)
    sid = await tabs.nth(before).get_attribute("data-session-id")
    panel = page.locator(f'[data-testid="session-panel"][data-session-id="{sid}"]')
    await expect(panel).to_be_visible()
    return panel


async def send(panel: Locator, text: str) -> None:
    composer = panel.get_by_test_id("composer")
    await composer.fill(text)
    await composer.press("Enter")


async def final_answer(panel: Locator, contains: str) -> Locator:
    answer = panel.locator('[data-testid="answer"][data-state="final"]').last
    await expect(answer).to_contain_text(contains)
    return answer


async def test_page_loads_clean_with_agents_and_state(serve: Any) -> None:
    server = await serve(files=(WEATHER, GREETER))
    async with browser(server) as (page, problems):
        await expect(page).to_have_title("myagent-ws console")
        options = page.get_by_test_id("agent-option")
        await expect(options).to_have_count(2)
        weather = page.locator('.agent-card[data-agent="weather-assistant"]')
        await expect(weather).to_contain_text("get_weather")  # from system.agents
        await expect(weather).to_contain_text("Answers weather")
        await expect(page.get_by_test_id("conn-label")).to_have_text("Connected")
        await expect(page.get_by_test_id("start-session")).to_be_enabled()
        await shot(page, "01-start")
    assert problems == []


async def test_weather_turn_tool_card_streamed_and_final_answer(serve: Any) -> None:
    server = await serve(files=(WEATHER, GREETER))
    async with browser(server) as (page, problems):
        panel = await start_session(page, "weather-assistant")
        await expect(panel.get_by_test_id("offline-badge")).to_be_visible()
        await page.evaluate(
            """() => { window.partials = [];
            myagentConsole.client.on('agent.partial_answer', (e) => partials.push(e.content)); }"""
        )
        await send(panel, BEIJING)
        await expect(panel.get_by_test_id("user-message")).to_have_text(BEIJING)
        card = panel.get_by_test_id("tool-card")
        await expect(card).to_have_attribute("data-status", "success")
        await expect(card.get_by_test_id("tool-name")).to_have_text("get_weather")
        await expect(card.get_by_test_id("tool-args")).to_have_text('{\n  "city": "北京"\n}')
        await expect(card.get_by_test_id("tool-result")).to_contain_text("晴")
        await expect(card.get_by_test_id("tool-duration")).to_have_text(re.compile(r"\d ms$"))
        answer = await final_answer(panel, "25°C")
        partials = await page.evaluate("partials")
        assert len(partials) > 1 and "".join(partials) == await answer.inner_text()
        await expect(panel.get_by_test_id("thinking")).to_have_count(0)
        await expect(panel.get_by_test_id("send")).to_be_enabled()
        await expect(page.get_by_test_id("error")).to_have_count(0)
        await shot(page, "02-weather-answer")
    assert problems == []


async def test_cancel_mid_turn_then_next_turn_completes(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    first, second = f"gate-{uuid.uuid4().hex}", f"gate-{uuid.uuid4().hex}"
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        await send(panel, first)
        card = panel.get_by_test_id("tool-card")
        await expect(card).to_have_attribute("data-status", "running")
        await expect(panel.get_by_test_id("send")).to_be_disabled()
        await shot(page, "03-mid-turn")
        await panel.get_by_test_id("cancel").click()
        await expect(panel.get_by_test_id("interrupted")).to_contain_text("cancelled")
        await expect(card).to_have_attribute("data-status", "stopped")
        await expect(panel.get_by_test_id("cancel")).to_be_hidden()
        await shot(page, "04-cancelled")
        WaitTool.gate(second).set()
        await send(panel, second)
        await final_answer(panel, f"gate {second} opened")
        await expect(panel.get_by_test_id("tool-card").last).to_have_attribute(
            "data-status", "success"
        )
    assert problems == []


async def test_reload_then_new_session_works(serve: Any) -> None:
    server = await serve()
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        await send(panel, BEIJING)
        await final_answer(panel, "25°C")
        await page.reload()
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
        await expect(page.get_by_test_id("session-tab")).to_have_count(0)
        panel = await start_session(page)
        await send(panel, "What's the weather in London?")
        await final_answer(panel, "London")
    assert problems == []


async def test_seed_javascript_snippet_runs_verbatim_in_the_page(serve: Any) -> None:
    server = await serve()
    text = reference("seed-ws-server-README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```javascript\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "new WebSocket" in b).replace("8080", str(server.port))
    async with browser(server) as (page, problems):
        await page.evaluate(
            """() => { window.seen = []; const log = console.log;
            console.log = (...args) => { if (args[1] && args[1].event) seen.push(args[1].event);
            log(...args); }; }"""
        )
        await page.add_script_tag(content=snippet)  # a classic script, as pasted
        await page.wait_for_function("seen.includes('agent.final_answer')", timeout=15_000)
        seen = await page.evaluate("seen")
    assert seen[:2] == ["system.connected", "agent.session_created"]
    assert seen[-1] == "agent.final_answer" and "agent.partial_answer" in seen
    assert problems == []


async def test_readme_javascript_client_example_runs_in_the_page(serve: Any) -> None:
    """The README's MyAgentClient example, as a module script, against a real server."""
    server = await serve()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```javascript\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "MyAgentClient" in b).replace("8080", str(server.port))
    prelude = (
        "window.streamed = []; window.answers = [];\n"
        "const render = (sid, text) => window.streamed.push(text);\n"
        "const done = (sid, text) => window.answers.push(text);\n"
    )
    async with browser(server) as (page, problems):
        await page.add_script_tag(content=prelude + example, type="module")
        await page.wait_for_function("window.answers?.length === 1", timeout=15_000)
        streamed, answers = await page.evaluate("[window.streamed, window.answers]")
    assert "".join(streamed) == answers[0] and "北京" in answers[0]
    assert problems == []


UNSAFE = (
    '**bold** text with <img src=x onerror="window.pwned=1"> and `code <b>`\n\n'
    "- one\n- two\n\n"
    "[bad](javascript:window.pwned=2) and [good](https://example.com/docs)\n\n"
    "```\n<script>window.pwned=3</script>\n```"
)


async def test_markdown_renders_safely(serve: Any) -> None:
    agent = create_react_agent(
        name="markdown", model=FunctionModel(lambda messages, tools: UNSAFE), description="MD"
    )
    server = await serve(files=(), agents=(agent,))
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        await send(panel, "show me")
        answer = await final_answer(panel, 'onerror="window.pwned=1"')
        await expect(answer.locator("strong")).to_have_text("bold")
        await expect(answer.locator("code").first).to_have_text("code <b>")
        await expect(answer.locator("li")).to_have_count(2)
        await expect(answer.locator("pre code")).to_have_text("<script>window.pwned=3</script>")
        await expect(answer).to_contain_text("[bad](javascript:window.pwned=2)")
        good = answer.locator("a")
        await expect(good).to_have_count(1)
        await expect(good).to_have_attribute("href", "https://example.com/docs")
        await expect(good).to_have_attribute("rel", re.compile("noopener"))
        for tag in ("img", "script", "b"):
            await expect(page.locator(f'[data-testid="transcript"] {tag}')).to_have_count(0)
        assert await page.evaluate("window.pwned") is None
        await shot(page, "05-markdown")
    assert problems == []


async def test_two_sessions_keep_their_own_transcripts(serve: Any) -> None:
    server = await serve(files=(WEATHER, GREETER))
    async with browser(server) as (page, problems):
        weather = await start_session(page, "weather-assistant")
        await send(weather, BEIJING)
        greeter = await start_session(page, "greeter")
        await expect(weather).to_be_hidden()
        await send(greeter, "Please greet Ada")
        await final_answer(greeter, "Hello")
        await page.locator('[data-testid="session-tab"]').first.click()
        await expect(weather).to_be_visible()
        await final_answer(weather, "25°C")
        await expect(weather.get_by_test_id("answer")).to_have_count(1)
        await expect(greeter.get_by_test_id("answer")).to_have_count(1)
        await expect(greeter.get_by_test_id("answer")).not_to_contain_text("25°C")
        await expect(weather.get_by_test_id("tool-name")).to_have_text("get_weather")
        await expect(greeter.get_by_test_id("tool-name")).to_have_text("greet")
        await shot(page, "06-two-sessions")
        await page.set_viewport_size({"width": 390, "height": 800})
        await expect(page.get_by_test_id("session-tab")).to_have_count(2)
        await shot(page, "09-narrow")
    assert problems == []


async def test_dropped_connection_reconnects_and_replays_without_duplicates(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    key = f"gate-{uuid.uuid4().hex}"
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        await send(panel, key)
        await expect(panel.get_by_test_id("tool-card")).to_have_attribute("data-status", "running")
        for connection in tuple(server.app[CONNECTIONS]):
            await connection.ws.close()
        state = page.get_by_test_id("conn-state")
        await expect(state).to_have_attribute("data-state", "reconnecting")
        await shot(page, "07-reconnecting")
        WaitTool.gate(key).set()  # the turn ends while no connection is attached
        await expect(state).to_have_attribute("data-state", "connected")
        await final_answer(panel, f"gate {key} opened")
        await expect(panel.get_by_test_id("notice").last).to_contain_text("replayed")
        await expect(panel.get_by_test_id("tool-card")).to_have_count(1)
        await expect(panel.get_by_test_id("answer")).to_have_count(1)
        await send(panel, "after")  # the re-attached session takes new turns
        await expect(panel.get_by_test_id("tool-card")).to_have_count(2)
        await panel.get_by_test_id("cancel").click()
        await expect(panel.get_by_test_id("interrupted")).to_be_visible()
    assert problems == []


async def test_confirm_dialog_sends_user_response(serve: Any) -> None:
    server = await serve()
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        sid = await panel.get_attribute("data-session-id")
        confirm = {
            "event": "agent.user_confirm",
            "session_id": sid,
            "step_id": "step-7",
            "content": "Delete the file?",
            "metadata": {"tool": "delete_file", "args": {"path": "/tmp/x"}},
        }
        # As if the server had asked (this server's agents never do).
        await page.evaluate("(e) => myagentConsole.client._onFrame(JSON.stringify(e))", confirm)
        dialog = page.get_by_test_id("confirm-dialog")
        await expect(dialog).to_be_visible()
        await expect(dialog.get_by_test_id("confirm-args")).to_contain_text('"path": "/tmp/x"')
        await shot(page, "08-confirm-dialog")
        await dialog.get_by_test_id("confirm-feedback").fill("not now")
        await dialog.get_by_test_id("confirm-reject").click()
        await expect(dialog).to_be_hidden()
        await expect(panel.get_by_test_id("confirm-status")).to_have_text("rejected: not now")
        # The server validated the user.response and says nothing was waiting for it.
        await expect(panel.get_by_test_id("notice").last).to_contain_text("step-7")
    assert problems == []
