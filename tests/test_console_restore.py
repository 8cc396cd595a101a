"""The web console keeps its sessions across a reload and into a second tab, in Chromium
against a real server: whole transcripts rebuilt from the server's replay (sessionStorage
keeps only ids, agents and lastSeq), a reload in the middle of a turn, the first message
typed at once, the reconnecting state with its retry time, and replayed events marked only
while they replay. Helpers and conventions are those of test_console_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from playwright.async_api import Locator, Page, WebSocketRoute, expect

from myagent import BaseTool, Model, ModelReply, ToolCallRequest, ToolResult, create_react_agent
from myagent_ws.keys import SESSIONS
from tests.agents import WaitTool, bookings, waiting_agent
from tests.conftest import BEIJING, BOOKING, GREETER, WEATHER
from tests.test_console_browser import (
    STORE_KEY,
    ask_to_book,
    browser,
    drop_connections,
    final_answer,
    kept,
    panel_of,
    record_events,
    seen,
    send,
    shot,
    start_session,
    watch,
)

PIECES = [f"part{i} " for i in range(12)]
ANSWER = "".join(PIECES).strip()


class LookupTool(BaseTool):
    name = "lookup"
    description = "Look a topic up."
    parameters = {"type": "object", "properties": {"topic": {"type": "string"}}}

    async def execute(self, topic: str = "") -> ToolResult:
        return ToolResult(output=f"notes on {topic[:8]}")


class GatedAnswer(Model):
    """Calls lookup, then streams its answer in three parts: parts 0-5, then parts 6-8 once
    the gate "<user text>/1" opens, then the rest once "<user text>/2" opens. A turn caught
    in the middle of its answer."""

    provider = "function"
    offline = True
    model_id = "gated"
    gates: dict[str, asyncio.Event] = {}

    @classmethod
    def gate(cls, key: str) -> asyncio.Event:
        return cls.gates.setdefault(key, asyncio.Event())

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        key = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if messages[-1]["role"] != "tool":
            args = json.dumps({"topic": key})
            yield ModelReply(
                tool_calls=[ToolCallRequest(id="call_1", name="lookup", arguments=args)]
            )
            return
        for piece in PIECES[:6]:
            yield piece
        await self.gate(f"{key}/1").wait()
        for piece in PIECES[6:9]:
            yield piece
        await self.gate(f"{key}/2").wait()
        for piece in PIECES[9:]:
            yield piece
        yield ModelReply(text="".join(PIECES))


def gated_agent() -> Any:
    return create_react_agent(
        name="slow", tools=[LookupTool()], model=GatedAnswer(), description="Answers slowly."
    )


class HoldResume:
    """Routes a page's WebSocket through the test: `before()` runs before it reaches the
    server (the page is away meanwhile), and the agent.session_resumed of `sid`, with
    everything after it, is held back until release(), so the page stays mid-replay."""

    def __init__(
        self, sid: str, sent: list[str | bytes], before: Callable[[], Awaitable[None]]
    ) -> None:
        self.sid = sid
        self.sent = sent  # what the page sends
        self.before = before
        self.held: list[str | bytes] | None = None
        self.released = False
        self.page_side: WebSocketRoute | None = None

    async def route(self, ws: WebSocketRoute) -> None:
        self.page_side = ws
        await self.before()
        server = ws.connect_to_server()

        def up(message: str | bytes) -> None:
            self.sent.append(message)
            server.send(message)

        ws.on_message(up)
        server.on_message(self.from_server)

    def from_server(self, message: str | bytes) -> None:
        assert self.page_side is not None
        if self.held is None and not self.released:
            event = json.loads(message)
            if event["event"] == "agent.session_resumed" and event["session_id"] == self.sid:
                self.held = []
        if self.held is not None and not self.released:
            self.held.append(message)
        else:
            self.page_side.send(message)

    def release(self) -> None:
        assert self.page_side is not None and self.held
        self.released = True
        for message in self.held:
            self.page_side.send(message)


async def session_id(panel: Locator) -> str:
    sid = await panel.get_attribute("data-session-id")
    assert sid
    return sid


async def transcript(panel: Locator) -> list[list[str]]:
    """The tool cards and answers of a session, in order: kind, state, text."""
    return await panel.evaluate(
        """(panel) => [...panel.querySelectorAll(
            '[data-testid="tool-card"], [data-testid="answer"]')]
        .map((e) => [e.dataset.testid, e.dataset.status || e.dataset.state, e.innerText])"""
    )


async def test_reload_mid_turn_replays_marked_then_the_answer_finishes_once(serve: Any) -> None:
    server = await serve(files=(), agents=(gated_agent(),))
    key = f"topic-{uuid.uuid4().hex}"
    sent: list[str | bytes] = []  # what the page sends, before and after the reload

    def spy(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append(payload))

    async def setup(page: Page) -> None:
        page.on("websocket", spy)

    async with browser(server, setup=setup) as (page, problems):
        panel = await start_session(page)
        sid = await session_id(panel)
        await send(panel, key)
        answer = panel.get_by_test_id("answer")
        await expect(answer).to_have_text("part0 part1 part2 part3 part4 part5")
        await expect(answer).to_have_attribute("data-state", "streaming")
        card_before = await panel.get_by_test_id("tool-card").inner_text()
        # Longer than the client's ack interval: a page that acked would have by now, and
        # the server would have dropped what it acked. This one does not.
        await page.wait_for_timeout(600)
        assert sent and not [f for f in sent if "user.ack" in str(f)]
        session = server.app[SESSIONS].sessions[sid]
        assert session.buffer.first_seq == 1

        async def stream_while_away() -> None:
            """Parts 6-8 stream while no page is attached: news to the reloaded page."""
            GatedAnswer.gate(f"{key}/1").set()
            async with asyncio.timeout(5):
                while b"part8" not in (session.buffer.get(session.seq) or b""):
                    await asyncio.sleep(0.01)

        hold = HoldResume(sid, sent, before=stream_while_away)
        # (A "websocket" listener and a WebSocket route together keep Playwright's routed
        # socket from connecting: from here on the route sees the frames.)
        page.remove_listener("websocket", spy)
        await page.route_web_socket(re.compile("^ws://"), hold.route)
        await page.reload()
        # Mid-replay (its agent.session_resumed is held back): the turn is drawn again from
        # the replay, and what the replay drew is marked: "seen" what the page had shown
        # before the reload (its kept lastSeq says how far), "new" what came meanwhile.
        panel = panel_of(page, sid)
        await expect(panel).to_have_attribute("data-replaying", "true")
        await expect(panel.get_by_test_id("replay-status")).to_be_visible()
        card = panel.get_by_test_id("tool-card")
        await expect(card).to_have_attribute("data-replayed", "seen")
        await expect(card).to_have_attribute("data-status", "success")
        assert await card.inner_text() == card_before
        answer = panel.get_by_test_id("answer")
        await expect(answer).to_have_text(" ".join(p.strip() for p in PIECES[:9]))
        await expect(answer).to_have_attribute("data-replayed", "new")
        await expect(answer).to_have_attribute("data-state", "streaming")
        # The message itself, from the turn's first agent.thinking.
        await expect(panel.get_by_test_id("user-message-elsewhere")).to_have_text(key)
        await expect(panel.get_by_test_id("cancel")).to_be_visible()  # the turn still runs
        await shot(page, "14-replaying-after-reload")

        hold.release()
        await expect(panel).to_have_attribute("data-replaying", "false")
        await expect(panel.locator("[data-replayed]")).to_have_count(0)
        await expect(panel.get_by_test_id("replay-status")).to_be_hidden()
        await expect(panel.get_by_test_id("notice").last).to_contain_text(
            "Re-attached after the page reloaded; "
        )
        await expect(panel.get_by_test_id("notice").last).to_contain_text(
            "3 of them new since this page last showed it"
        )

        GatedAnswer.gate(f"{key}/2").set()  # the rest streams live into the reloaded page
        answer = await final_answer(panel, "part11")
        assert await answer.inner_text() == ANSWER  # whole, and once
        await expect(panel.get_by_test_id("answer")).to_have_count(1)
        await expect(panel.get_by_test_id("tool-card")).to_have_count(1)
        await expect(panel.get_by_test_id("send")).to_be_enabled()
        await shot(page, "15-answer-finished-after-reload")
        # The tab keeps ids, agents and seqs, never the transcript.
        stored = await kept(page)
        assert [s["id"] for s in stored["sessions"]] == [sid]
        assert "part" not in json.dumps(stored) and "notes on" not in json.dumps(stored)
        assert not [f for f in sent if "user.ack" in str(f)]
        assert session.buffer.first_seq == 1
    assert problems == []


async def test_each_reload_rebuilds_the_whole_transcript(serve: Any) -> None:
    server = await serve(files=(WEATHER,))
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        sid = await session_id(panel)
        turns = [(BEIJING, "25°C"), ("What's the weather in London?", "London")]
        for number, (text, expected) in enumerate(turns, 1):
            await send(panel, text)
            await final_answer(panel, expected)
            before = await transcript(panel)
            assert [kind for kind, _, _ in before] == ["tool-card", "answer"] * number
            # lastSeq is kept too, written within a second of the events (and at pagehide).
            last = await page.evaluate("(sid) => myagentConsole.client.lastSeq(sid)", sid)
            await page.wait_for_function(
                "([key, last]) => JSON.parse(sessionStorage.getItem(key))"
                ".sessions[0].lastSeq === last",
                arg=[STORE_KEY, last],
            )
            await page.reload()
            panel = panel_of(page, sid)
            notes = panel.get_by_test_id("notice")
            await expect(notes.last).to_contain_text("Re-attached after the page reloaded; ")
            await expect(notes.last).to_contain_text("0 of them new since this page last showed it")
            assert await transcript(panel) == before
            await expect(panel.get_by_test_id("user-message-elsewhere")).to_have_text(
                [text for text, _ in turns[:number]]
            )
            await expect(panel.locator("[data-replayed]")).to_have_count(0)
            await expect(panel.get_by_test_id("replay-gap")).to_have_count(0)
            # The second replay holds the first reload's agent.session_resumed (before the
            # London turn): not this page's, so neither a note nor the end of its replay.
            await expect(notes.filter(has_text="Re-attached")).to_have_count(1)
            last_child = "(t) => t.lastElementChild.textContent"
            assert (await panel.get_by_test_id("transcript").evaluate(last_child)).startswith(
                "Re-attached after the page reloaded"
            )
            await expect(notes.filter(has_text="Session started")).to_have_count(1)
        await send(panel, "And in Shanghai?")  # the restored session takes new turns
        await final_answer(panel, "Shanghai")
        await expect(panel.get_by_test_id("answer")).to_have_count(3)
    assert problems == []


async def test_events_the_server_no_longer_keeps_are_said_out_loud(serve: Any) -> None:
    server = await serve(files=(WEATHER,), replay_buffer=8)
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        sid = await session_id(panel)
        await send(panel, BEIJING)
        answer = await final_answer(panel, "25°C")
        text = await answer.inner_text()
        await page.reload()
        panel = panel_of(page, sid)
        gap = panel.get_by_test_id("replay-gap")
        await expect(gap).to_have_text(
            "Earlier events of this session are no longer kept by the server, "
            "so they are not shown."
        )
        await expect(panel.get_by_test_id("notice").last).to_contain_text(
            "are no longer kept by the server"
        )
        # What is still kept comes back, below the gap.
        await expect(panel.locator('[data-testid="answer"][data-state="final"]')).to_have_text(text)
        first = await panel.get_by_test_id("transcript").evaluate(
            "(t) => t.firstElementChild.dataset.testid"
        )
        assert first == "replay-gap"
        await shot(page, "16-replay-gap")
    assert problems == []


async def test_a_tab_opened_from_the_page_shows_the_session_and_answers_its_question(
    serve: Any,
) -> None:
    server = await serve(files=(BOOKING,))
    async with browser(server) as (page, problems):
        await record_events(page)
        panel, sid, dialog = await ask_to_book(page)
        step = await dialog.get_attribute("data-step-id")
        # window.open gives the new tab a copy of this tab's sessionStorage (Chromium).
        async with page.context.expect_page() as opened:
            await page.evaluate("() => window.open(location.href)")
        tab = await opened.value
        watch(tab, problems)
        await expect(tab.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
        other = panel_of(tab, sid)
        await expect(other).to_be_visible()
        await expect(other.get_by_test_id("notice").last).to_contain_text(
            "Re-attached when this page opened"
        )
        tool = other.get_by_test_id("tool-card")
        await expect(tool).to_have_attribute("data-status", "waiting")
        await expect(tool.get_by_test_id("tool-args")).to_contain_text('"restaurant": "Luigi"')
        asked = tab.get_by_test_id("confirm-dialog")
        await expect(asked).to_be_visible()
        await expect(asked).to_have_attribute("data-step-id", step or "?")
        await shot(tab, "17-second-tab")

        await asked.get_by_test_id("confirm-approve").click()
        await final_answer(other, "booking #1")
        await expect(other.get_by_test_id("confirm-outcome")).to_have_text("ran")
        # The first tab watched it live: its open question was taken back by the outcome.
        await final_answer(panel, "booking #1")
        await expect(dialog).to_be_hidden()
        await expect(panel.get_by_test_id("confirm-outcome")).to_have_text("ran")
        await expect(panel.get_by_test_id("tool-card")).to_have_count(1)
        # The server told it of the other tab's re-attach (its agent.session_resumed goes to
        # every connection of the session); that is not news in this tab's transcript.
        assert len(await seen(page, "agent.session_resumed")) == 1
        await expect(panel.get_by_test_id("notice").filter(has_text="Re")).to_have_count(0)
        assert len(bookings(server, sid)) == 1
    assert problems == []


async def test_first_message_typed_at_once_starts_a_session(serve: Any) -> None:
    server = await serve(files=(WEATHER, GREETER), default="weather-assistant")
    link = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def slow_link(ws: WebSocketRoute) -> None:
        # The page's socket reaches the server only once the person has typed and sent.
        await link.wait()
        server_side = ws.connect_to_server()

        def up(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server_side.send(message)

        ws.on_message(up)

    async def setup(page: Page) -> None:
        await page.route_web_socket(re.compile("^ws://"), slow_link)

    async with browser(server, setup=setup, connected=False) as (page, problems):
        composer = page.get_by_test_id("start-composer")
        await expect(composer).to_have_attribute("placeholder", "Message weather-assistant…")
        await expect(composer).to_be_focused()
        await page.keyboard.type(BEIJING)
        await page.keyboard.press("Enter")
        await expect(page.get_by_test_id("start-hint")).to_contain_text(
            "as soon as the connection is up"
        )
        await expect(page.get_by_test_id("conn-state")).to_have_attribute(
            "data-state", "connecting"
        )
        link.set()
        panel = page.get_by_test_id("session-panel")
        await expect(panel).to_be_visible()
        await expect(panel.get_by_test_id("user-message")).to_have_text(BEIJING)
        await final_answer(panel, "25°C")
        await expect(page.get_by_test_id("session-tab")).to_contain_text("weather-assistant")
        await expect(page.get_by_test_id("empty-state")).to_be_hidden()
        creates = [f for f in sent if f["event"] == "user.create_session"]
        assert len(creates) == 1 and "content" not in creates[0]  # the default agent: no name
        message = next(f for f in sent if f["event"] == "user.message")
        assert message["content"] == BEIJING

        # With another agent picked, and a connection already up: Enter goes at once.
        await page.locator('.agent-card[data-agent="greeter"]').click()
        await panel.get_by_test_id("end-session").click()
        await panel.get_by_test_id("end-session").click()  # now "Close"
        await expect(page.get_by_test_id("empty-state")).to_be_visible()
        await expect(composer).to_have_attribute("placeholder", "Message greeter…")
        await composer.fill("Please greet Ada")
        await composer.press("Enter")
        await final_answer(page.get_by_test_id("session-panel"), "Hello")
        creates = [f for f in sent if f["event"] == "user.create_session"]
        assert creates[-1]["content"] == {"agent": "greeter"}
    assert problems == []


async def test_reconnecting_shows_the_retry_time_then_recovers_and_replays(serve: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    key = f"gate-{uuid.uuid4().hex}"
    async with browser(server) as (page, problems):
        panel = await start_session(page)
        await send(panel, key)
        await expect(panel.get_by_test_id("tool-card")).to_have_attribute("data-status", "running")
        await page.evaluate(
            "() => Object.assign(myagentConsole.client.backoff, "
            "{ initialMs: 1500, factor: 1, jitter: 0 })"
        )
        # The server stops listening and drops the page's connection.
        site = next(iter(server.runner.sites))
        await site.stop()
        await drop_connections(server)
        label = page.get_by_test_id("conn-label")
        await expect(label).to_have_text("Reconnecting… retrying in 2 s (attempt 1)")
        await expect(label).to_have_text("Reconnecting… retrying in 1 s (attempt 1)")
        # That attempt finds nobody listening: the next one is counted down too.
        await expect(label).to_have_text(
            re.compile(r"^Reconnecting… retrying in \d s \(attempt 2\)$")
        )
        await shot(page, "18-reconnecting-countdown")
        WaitTool.gate(key).set()  # the turn ends while the page is away
        await web.TCPSite(server.runner, "127.0.0.1", server.port).start()
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
        await expect(label).to_have_text("Connected")
        await final_answer(panel, f"gate {key} opened")
        await expect(panel.get_by_test_id("notice").last).to_contain_text("Reconnected; ")
        await expect(panel.locator("[data-replayed]")).to_have_count(0)
        await expect(panel.get_by_test_id("tool-card")).to_have_count(1)
        await expect(panel.get_by_test_id("answer")).to_have_count(1)
    # Chromium reports each attempt that found the port closed; nothing else went wrong.
    refused = [p for p in problems if "ERR_CONNECTION_REFUSED" in p]
    assert refused and len(refused) == len(problems), problems
