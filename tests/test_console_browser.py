"""The web console in a real browser: Debian's Chromium, driven by Playwright's async API,
against a real server on a loopback port. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Locator, Page, async_playwright, expect

from myagent import FunctionModel, create_react_agent
from myagent_ws.keys import CONNECTIONS, SESSIONS
from tests.agents import WaitTool, bookings, waiting_agent
from tests.conftest import ASK, BEIJING, BOOKING, GREETER, ROOT, WEATHER, reference

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
expect.set_options(timeout=10_000)


def watch(page: Page, problems: list[str]) -> None:
    """Collects a page's problems: console errors, page errors, failed requests, non-2xx
    responses, any request off loopback."""

    def on_request(request: Any) -> None:
        host = urlsplit(request.url).hostname
        if not request.url.startswith("data:") and host not in ("127.0.0.1", "localhost"):
            problems.append(f"request off loopback: {request.url}")

    def on_response(response: Any) -> None:
        # 304: the browser revalidating a cached static file on reload.
        if not (200 <= response.status < 300 or response.status == 304):
            problems.append(f"HTTP {response.status}: {response.url}")

    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on("request", on_request)
    page.on("response", on_response)


@asynccontextmanager
async def browser(
    server: Any,
    setup: Callable[[Page], Awaitable[None]] | None = None,
    connected: bool = True,
) -> AsyncIterator[tuple[Page, list[str]]]:
    """A fresh Chromium page on the console (once it is connected, unless `connected` is
    False), and the problems seen while it ran (see watch). `setup(page)` runs before the
    page is opened (e.g. to route its WebSocket)."""
    assert CHROMIUM_FOUND, (
        f"{CHROMIUM} is missing: install Debian's chromium package (CI's .ci/run does)"
    )
    problems: list[str] = []
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await chromium.new_page(viewport={"width": 1280, "height": 800})
            watch(page, problems)
            if setup is not None:
                await setup(page)
            await page.goto(str(server.make_url("/")))
            if connected:
                await expect(page.get_by_test_id("conn-state")).to_have_attribute(
                    "data-state", "connected"
                )
            yield page, problems
        finally:
            await chromium.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


def panel_of(page: Page, sid: str) -> Locator:
    return page.locator(f'[data-testid="session-panel"][data-session-id="{sid}"]')


async def start_session(page: Page, agent: str | None = None) -> Locator:
    """Pick the agent (if named), press Start session; the new session's panel."""
    tabs = page.get_by_test_id("session-tab")
    before = await tabs.count()
    if agent:
        await page.locator(f'.agent-card[data-agent="{agent}"]').click()
    await page.get_by_test_id("start-session").click()
    await expect(tabs).to_have_count(before + 1)
    sid = await tabs.nth(before).get_attribute("data-session-id")
    panel = panel_of(page, sid)
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


async def drop_connections(server: Any) -> None:
    """Closes every connection the server has open, as a dropped link would end them."""
    for connection in tuple(server.app[CONNECTIONS]):
        await connection.ws.close()


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


async def test_reload_reattaches_the_session_and_a_new_one_works(serve: Any) -> None:
    server = await serve()
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        sid = await panel.get_attribute("data-session-id")
        await send(panel, BEIJING)
        await final_answer(panel, "25°C")
        await page.reload()
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
        # The session is kept in sessionStorage and re-attached; the server replays all it
        # holds (the console does not ack), so the transcript comes back whole.
        tabs = page.get_by_test_id("session-tab")
        await expect(tabs).to_have_count(1)
        await expect(tabs).to_have_attribute("data-session-id", sid)
        kept_panel = panel_of(page, sid)
        await expect(kept_panel.get_by_test_id("notice").last).to_contain_text("page reloaded")
        await expect(kept_panel.get_by_test_id("tool-name")).to_have_text("get_weather")
        await final_answer(kept_panel, "25°C")
        await expect(kept_panel.get_by_test_id("send")).to_be_enabled()
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
        await drop_connections(server)
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


STORE_KEY = "myagent-console.sessions.v1"  # session-store.js


async def kept(page: Page) -> dict[str, Any]:
    """What the page keeps in sessionStorage."""
    return await page.evaluate("(key) => JSON.parse(sessionStorage.getItem(key))", STORE_KEY)


async def all_acked(server: Any, sid: str) -> None:
    """Waits until the page's user.ack let the server drop every event of the session."""
    session = server.app[SESSIONS].sessions[sid]
    async with asyncio.timeout(5):
        while session.buffer.first_seq <= session.seq:
            await asyncio.sleep(0.05)


async def record_events(page: Page) -> None:
    await page.evaluate(
        "() => { window.seen = []; myagentConsole.client.on('event', (e) => seen.push(e)); }"
    )


async def seen(page: Page, name: str) -> list[dict[str, Any]]:
    return await page.evaluate("(name) => seen.filter((e) => e.event === name)", name)


async def ask_to_book(page: Page) -> tuple[Locator, str, Locator]:
    """A booking session asked to book: its panel, its id and the open dialog."""
    panel = await start_session(page)
    sid = await panel.get_attribute("data-session-id")
    assert sid
    await send(panel, ASK)
    dialog = page.get_by_test_id("confirm-dialog")
    await expect(dialog).to_be_visible()
    return panel, sid, dialog


async def test_confirm_approve_books_once_and_shows_the_outcome(serve: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        await record_events(page)
        panel, sid, dialog = await ask_to_book(page)
        await expect(dialog.get_by_test_id("confirm-question")).to_contain_text(
            'book_table(restaurant="Luigi", people=2, time="19:30")'
        )
        await expect(dialog.get_by_test_id("confirm-where")).to_contain_text("tool book_table")
        args = dialog.get_by_test_id("confirm-args")
        for field in ('"restaurant": "Luigi"', '"people": 2', '"time": "19:30"'):
            await expect(args).to_contain_text(field)
        await expect(dialog.get_by_test_id("confirm-expires")).to_contain_text(
            re.compile(r"Expires at .+ \(in [45] min")
        )
        card = panel.get_by_test_id("confirm-card")
        step = await dialog.get_attribute("data-step-id")
        await expect(card).to_have_attribute("data-step-id", step or "?")
        await expect(card.get_by_test_id("confirm-status")).to_have_text("waiting for your answer")
        tool = panel.get_by_test_id("tool-card")
        await expect(tool).to_have_attribute("data-status", "waiting")
        assert bookings(server, sid) == []  # nothing runs before the answer
        await shot(page, "08-confirm-dialog")

        await dialog.get_by_test_id("confirm-approve").click()
        await expect(dialog).to_be_hidden()
        await expect(card.get_by_test_id("confirm-status")).to_have_text("approved")
        await final_answer(panel, "booking #1")
        await expect(card.get_by_test_id("confirm-outcome")).to_have_text("ran")
        await expect(tool).to_have_attribute("data-status", "success")
        await expect(tool.get_by_test_id("tool-result")).to_contain_text("booking #1")
        await expect(panel.get_by_test_id("confirm-card")).to_have_count(1)
        await expect(panel.get_by_test_id("error")).to_have_count(0)
        await shot(page, "10-confirm-approved")
        assert len(await seen(page, "agent.tool_result")) == 1
        assert len(bookings(server, sid)) == 1
    assert problems == []


async def test_confirm_reject_with_feedback_books_nothing(serve: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        panel, sid, dialog = await ask_to_book(page)
        await dialog.get_by_test_id("confirm-feedback").fill("not tonight")
        await dialog.get_by_test_id("confirm-reject").click()
        await expect(dialog).to_be_hidden()
        card = panel.get_by_test_id("confirm-card")
        await expect(card.get_by_test_id("confirm-status")).to_have_text("rejected: not tonight")
        await expect(card.get_by_test_id("confirm-outcome")).to_have_text("not run: declined")
        tool = panel.get_by_test_id("tool-card")
        await expect(tool).to_have_attribute("data-status", "rejected")
        await expect(tool.get_by_test_id("tool-status")).to_have_text("rejected · declined")
        await expect(tool.get_by_test_id("tool-result")).to_contain_text("not tonight")
        await expect(panel.locator('[data-testid="answer"][data-state="final"]')).to_have_count(1)
        await expect(panel.get_by_test_id("send")).to_be_enabled()
        await shot(page, "11-confirm-rejected")
        assert bookings(server, sid) == []
    assert problems == []


@pytest.mark.parametrize("acked", [True, False], ids=["acked", "unacked"])
async def test_reload_while_a_confirmation_waits_asks_again_once(serve: Any, acked: bool) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        if acked:
            # The console does not ack (the server keeps the history for its replays), but
            # a client that does lets the server drop the question's events: after the
            # reload it is only asked again, its tool card drawn from the question.
            await page.evaluate("() => { myagentConsole.client.ack = true; }")
        panel, sid, dialog = await ask_to_book(page)
        step = await dialog.get_attribute("data-step-id")
        assert step
        stored = await kept(page)
        assert [s["id"] for s in stored["sessions"]] == [sid] and stored["active"] == sid
        if acked:  # the server no longer buffers the question: it is only asked again
            await all_acked(server, sid)
        frames: list[dict[str, Any]] = []  # what the reloaded page receives
        page.on(
            "websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(json.loads(f)))
        )

        await page.reload()
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
        await expect(page.get_by_test_id("session-tab")).to_have_count(1)
        panel = panel_of(page, sid)
        await expect(panel).to_be_visible()
        dialog = page.get_by_test_id("confirm-dialog")
        await expect(dialog).to_be_visible()
        await expect(dialog).to_have_attribute("data-step-id", step)
        await expect(dialog.get_by_test_id("confirm-args")).to_contain_text('"restaurant": "Luigi"')
        cards = panel.get_by_test_id("confirm-card")
        await expect(cards).to_have_count(1)
        await expect(cards).to_have_attribute("data-step-id", step)
        notice = panel.get_by_test_id("notice").last
        await expect(notice).to_contain_text("Re-attached after the page reloaded")
        if acked:  # the tool call itself is gone: its card is drawn from the question
            await expect(notice).to_contain_text("no longer kept by the server")
        tool = panel.get_by_test_id("tool-card")
        await expect(tool).to_have_count(1)
        await expect(tool).to_have_attribute("data-status", "waiting")
        await expect(tool.get_by_test_id("tool-args")).to_contain_text('"restaurant": "Luigi"')
        await shot(page, f"12-confirm-after-reload-{'acked' if acked else 'unacked'}")

        await dialog.get_by_test_id("confirm-approve").click()
        await final_answer(panel, "booking #1")
        await expect(cards.get_by_test_id("confirm-outcome")).to_have_text("ran")
        await expect(tool).to_have_attribute("data-status", "success")
        await expect(panel.get_by_test_id("answer")).to_have_count(1)
        await expect(panel.get_by_test_id("confirm-card")).to_have_count(1)
        await expect(panel.get_by_test_id("error")).to_have_count(0)
        asks = [f["step_id"] for f in frames if f["event"] == "agent.user_confirm"]
        assert asks == ([step] if acked else [step, step])  # replayed, then asked again
        assert [f["event"] for f in frames].count("agent.final_answer") == 1
        assert len(bookings(server, sid)) == 1
    assert problems == []


async def test_dropped_link_while_a_confirmation_waits_asks_again_on_the_same_card(
    serve: Any,
) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        panel, sid, dialog = await ask_to_book(page)
        step = await dialog.get_attribute("data-step-id")
        await page.evaluate("() => { myagentConsole.client.backoff.initialMs = 60000; }")
        await drop_connections(server)
        state = page.get_by_test_id("conn-state")
        await expect(state).to_have_attribute("data-state", "reconnecting")
        # Approving while offline: nothing goes out, and the card says so and keeps waiting.
        await dialog.get_by_test_id("confirm-approve").click()
        card = panel.get_by_test_id("confirm-card")
        await expect(card.get_by_test_id("confirm-detail")).to_contain_text("not sent")
        await expect(card.get_by_test_id("confirm-status")).to_have_text("waiting for your answer")
        await page.get_by_test_id("retry").click()
        await expect(state).to_have_attribute("data-state", "connected")
        # The server asks again (same step_id): the same card, the dialog opens again.
        await expect(dialog).to_be_visible()
        await expect(dialog).to_have_attribute("data-step-id", step or "?")
        await expect(panel.get_by_test_id("confirm-card")).to_have_count(1)
        await dialog.get_by_test_id("confirm-approve").click()
        await final_answer(panel, "booking #1")
        await expect(card.get_by_test_id("confirm-outcome")).to_have_text("ran")
        await expect(panel.get_by_test_id("tool-card")).to_have_count(1)
        assert len(bookings(server, sid)) == 1
    assert problems == []


async def test_questions_of_two_sessions_are_asked_one_at_a_time(serve: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        first_panel, first, dialog = await ask_to_book(page)
        await page.keyboard.press("Escape")  # not now: the card keeps a Review button
        await expect(dialog).to_be_hidden()
        review = first_panel.get_by_test_id("confirm-review")
        await expect(review).to_be_visible()
        second_panel, second, dialog = await ask_to_book(page)
        await expect(dialog).to_have_attribute("data-session-id", second)
        await dialog.get_by_test_id("confirm-approve").click()
        # The question still open in the other session follows, shown with its session.
        await expect(dialog).to_have_attribute("data-session-id", first)
        await expect(first_panel).to_be_visible()
        await page.keyboard.press("Escape")
        await final_answer(second_panel, "booking #1")
        await review.click()
        await expect(dialog).to_be_visible()
        await expect(dialog).to_have_attribute("data-session-id", first)
        await dialog.get_by_test_id("confirm-reject").click()
        await expect(first_panel.get_by_test_id("confirm-outcome")).to_have_text(
            "not run: declined"
        )
        assert bookings(server, first) == [] and len(bookings(server, second)) == 1
    assert problems == []


async def test_a_turn_that_ends_closes_its_open_question(serve: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        panel, sid, dialog = await ask_to_book(page)
        # Cancelled while the dialog is open (as from another tab on the same session).
        await page.evaluate("(sid) => myagentConsole.client.cancel(sid)", sid)
        await expect(dialog).to_be_hidden()
        card = panel.get_by_test_id("confirm-card")
        await expect(card.get_by_test_id("confirm-status")).to_have_text(
            "no longer needed (the turn ended)"
        )
        await expect(card.get_by_test_id("confirm-review")).to_be_hidden()
        await expect(panel.get_by_test_id("interrupted")).to_be_visible()
        await expect(panel.get_by_test_id("tool-card")).to_have_attribute("data-status", "stopped")
        await expect(panel.get_by_test_id("send")).to_be_enabled()
        assert bookings(server, sid) == []
    assert problems == []


async def test_a_question_nobody_answers_times_out_and_a_late_answer_is_explained(
    serve: Any,
) -> None:
    server = await serve(files=(BOOKING,), confirm_timeout_s=1.5)
    async with browser(server) as (page, problems):
        panel, sid, dialog = await ask_to_book(page)
        step = await dialog.get_attribute("data-step-id")
        await expect(dialog).to_be_hidden()  # the server's timeout takes the question back
        card = panel.get_by_test_id("confirm-card")
        await expect(card.get_by_test_id("confirm-status")).to_have_text("no answer in time")
        await expect(card.get_by_test_id("confirm-outcome")).to_have_text("not run: timed out")
        tool = panel.get_by_test_id("tool-card")
        await expect(tool.get_by_test_id("tool-status")).to_have_text("rejected · timed out")
        await expect(panel.locator('[data-testid="answer"][data-state="final"]')).to_have_count(1)
        # An answer that comes too late gets confirm_not_pending: said on the card, in words.
        await page.evaluate(
            "([sid, step]) => myagentConsole.client.respond(sid, step, true)", [sid, step]
        )
        await expect(card.get_by_test_id("confirm-detail")).to_contain_text(
            "Your answer was not used: Nothing in this session waits for approval"
        )
        await expect(panel.get_by_test_id("error")).to_have_count(0)
        await shot(page, "13-confirm-timed-out")
        assert bookings(server, sid) == []
    assert problems == []


async def test_reload_forgets_a_session_the_server_no_longer_has(serve: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        sid = await panel.get_attribute("data-session-id")
        await page.evaluate("() => myagentConsole.client.close()")  # the page goes quiet…
        manager = server.app[SESSIONS]
        await manager.end(manager.sessions[sid], "expired")  # …and its session expires
        await page.reload()
        notice = page.get_by_test_id("global-log").get_by_test_id("notice")
        await expect(notice).to_contain_text("no longer on the server")
        await expect(page.get_by_test_id("session-tab")).to_have_count(0)
        await expect(page.get_by_test_id("error")).to_have_count(0)
        assert await page.evaluate("(key) => sessionStorage.getItem(key)", STORE_KEY) is None
        # The page goes on as usual.
        panel = await start_session(page)
        await send(panel, ASK)
        await expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    assert problems == []
