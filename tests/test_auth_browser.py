"""Auth in a real browser (Debian's Chromium, driven by Playwright): the console asking for a
token and trading it for a ticket per connection, a front end on another origin fetching a
ticket through CORS (allowed, then refused), a ticket that opens one connection only, and
the browser client's ticket handling (getTicket, retries, no retry loop on a wrong token).
Chromium is launched as tests/test_console_browser.py launches it; screenshots go to
test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright, expect

from myagent_ws.console import STATIC
from myagent_ws.keys import CONNECTIONS, GATE
from tests.client import ticket as post_ticket
from tests.client import ws_url
from tests.conftest import BEIJING, TOKENS, WEATHER, free_port
from tests.test_console_browser import (
    ARGS,
    CHROMIUM,
    CHROMIUM_FOUND,
    STORE_KEY,
    browser,
    drop_connections,
    final_answer,
    panel_of,
    send,
    shot,
    start_session,
)

TOKEN = TOKENS["alice"]
TOKEN_KEY = "myagent-console.token.v1"  # console.js
# What Chromium logs for a fetch the server answered with an error status.
LOAD_FAILED = re.compile(r"Failed to load resource: the server responded with a status of 401")


@dataclass
class Watch:
    """What a page did: console errors and page errors, every request URL, the status of
    each POST /auth/ticket, the URL of each WebSocket it opened."""

    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    tickets: list[int] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.request.method == "POST" and response.url.endswith("/auth/ticket"):
            self.tickets.append(response.status)

    def unexpected(self, *allowed: re.Pattern[str]) -> list[str]:
        """The console and page errors that match none of `allowed`."""
        return [e for e in self.errors if not any(p.search(e) for p in allowed)]


@asynccontextmanager
async def chromium_page() -> AsyncIterator[tuple[Page, Watch]]:
    """A blank Chromium page (launched like test_console_browser's) and what it does."""
    assert CHROMIUM_FOUND, f"{CHROMIUM} is missing: install Debian's chromium package"
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await chromium.new_page(viewport={"width": 1280, "height": 800})
            watch = Watch()
            watch.attach(page)
            yield page, watch
        finally:
            await chromium.close()


def gate_log(monkeypatch: pytest.MonkeyPatch, server: Any) -> list[tuple[str, str, Any, bool]]:
    """(method, path, Origin, allowed) of every request the server's gate looks at: each
    WebSocket upgrade and each /auth/ticket request, preflights included."""
    gate = server.app[GATE]
    real = gate.origin_allowed
    seen: list[tuple[str, str, Any, bool]] = []

    def origin_allowed(request: web.Request) -> bool:
        allowed = real(request)
        seen.append((request.method, request.path, request.headers.get("Origin"), allowed))
        return allowed

    monkeypatch.setattr(gate, "origin_allowed", origin_allowed)
    return seen


async def principals(server: Any, expected: list[str]) -> None:
    """Waits (5 s at most) until the server's open connections belong to `expected`."""
    async with asyncio.timeout(5):
        while sorted(c.principal for c in server.app[CONNECTIONS]) != expected:
            await asyncio.sleep(0.05)


async def storage(page: Page) -> dict[str, Any]:
    return await page.evaluate(
        """([token, sessions]) => ({token: sessionStorage.getItem(token),
        sessions: sessionStorage.getItem(sessions), local: localStorage.length})""",
        [TOKEN_KEY, STORE_KEY],
    )


async def sign_in(page: Page, token: str) -> None:
    await page.get_by_test_id("auth-token").fill(token)
    await page.get_by_test_id("auth-connect").click()


# --- the console ----------------------------------------------------------------------------


async def test_console_asks_for_a_token_refuses_a_wrong_one_and_keeps_the_right_one(
    serve: Any, tokens_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(files=(WEATHER,), auth_tokens_file=tokens_file)
    gate = gate_log(monkeypatch, server)
    async with chromium_page() as (page, watch):
        await page.goto(str(server.make_url("/")))
        form = page.get_by_test_id("auth-panel")
        state = page.get_by_test_id("conn-state")
        await expect(form).to_be_visible()
        await expect(page.get_by_test_id("auth-token")).to_have_attribute("type", "password")
        await expect(page.get_by_test_id("auth-token")).to_be_focused()
        await expect(state).to_have_attribute("data-state", "unauthorized")
        await expect(page.get_by_test_id("conn-label")).to_have_text("Token needed")
        await expect(page.get_by_test_id("start-session")).to_be_disabled()
        await expect(page.get_by_test_id("empty-state")).to_be_hidden()
        await shot(page, "20-auth-token-asked")
        assert watch.tickets == [] and watch.sockets == [] and gate == []

        # A wrong token: /auth/ticket says 401, the page says so, asks again, opens no socket.
        await sign_in(page, "not-the-token")
        error = page.get_by_test_id("auth-error")
        await expect(error).to_contain_text("The server did not accept this token")
        await expect(error).to_contain_text("not valid for this server")
        await expect(form).to_be_visible()
        await expect(page.get_by_test_id("auth-token")).to_have_value("")
        await expect(state).to_have_attribute("data-state", "unauthorized")
        await expect(page.get_by_test_id("sign-out")).to_be_hidden()
        await shot(page, "21-auth-wrong-token")
        assert (await storage(page))["token"] is None
        await page.wait_for_timeout(1500)  # the client's first retry would come within 0.5 s
        assert watch.tickets == [401] and watch.sockets == []
        assert len(server.app[CONNECTIONS]) == 0

        # The right token: a ticket, then a socket with ?ticket= (never the token itself).
        await sign_in(page, TOKEN)
        await expect(state).to_have_attribute("data-state", "connected")
        await expect(form).to_be_hidden()
        await expect(error).to_be_hidden()
        await expect(page.get_by_test_id("sign-out")).to_be_visible()
        await principals(server, ["alice"])
        assert watch.tickets == [401, 200]
        assert len(watch.sockets) == 1 and re.search(r"/\?ticket=[\w-]{20,}$", watch.sockets[0])
        kept = await storage(page)
        assert kept["token"] == TOKEN and kept["local"] == 0
        panel = await start_session(page, "weather-assistant")
        sid = await panel.get_attribute("data-session-id")
        await send(panel, BEIJING)
        await final_answer(panel, "25°C")
        await expect(panel.get_by_test_id("tool-card")).to_have_attribute("data-status", "success")
        await shot(page, "22-auth-connected-answer")

        # A reload: the token kept in this tab is used again, no question asked, and the
        # session (alice's) is re-attached over the new connection.
        await page.reload()
        await expect(state).to_have_attribute("data-state", "connected")
        await expect(form).to_be_hidden()
        tab = page.get_by_test_id("session-tab")
        await expect(tab).to_have_attribute("data-session-id", sid or "?")
        kept_panel = panel_of(page, sid)
        await expect(kept_panel.get_by_test_id("notice").last).to_contain_text("page reloaded")
        await principals(server, ["alice"])
        assert watch.tickets == [401, 200, 200]
        assert len(watch.sockets) == 2 and watch.sockets[0] != watch.sockets[1]
        await shot(page, "23-auth-after-reload")

        # Signing out forgets the token and the kept sessions; the form comes back.
        await page.get_by_test_id("sign-out").click()
        await expect(form).to_be_visible()
        await expect(error).to_be_hidden()
        await expect(state).to_have_attribute("data-state", "unauthorized")
        assert await storage(page) == {"token": None, "sessions": None, "local": 0}
        await principals(server, [])

        assert TOKEN not in page.url
    assert not any(TOKEN in url for url in watch.urls + watch.sockets)
    # Every upgrade and ticket request came from the page's own origin (no preflight).
    origin = str(server.make_url("/")).rstrip("/")
    assert {(method, path, o, ok) for method, path, o, ok in gate} == {
        ("POST", "/auth/ticket", origin, True),
        ("GET", "/", origin, True),
    }
    assert watch.unexpected(LOAD_FAILED) == []


async def test_console_fetches_a_new_ticket_per_reconnect_and_stops_when_the_token_is_revoked(
    serve: Any, tokens_file: str
) -> None:
    server = await serve(files=(WEATHER,), auth_tokens_file=tokens_file)
    async with chromium_page() as (page, watch):
        await page.goto(str(server.make_url("/")))
        await sign_in(page, TOKEN)
        state = page.get_by_test_id("conn-state")
        await expect(state).to_have_attribute("data-state", "connected")
        await principals(server, ["alice"])

        # A dropped link: the client reconnects with a fresh ticket (the first is used up).
        await drop_connections(server)
        await expect(state).to_have_attribute("data-state", "reconnecting")
        await expect(state).to_have_attribute("data-state", "connected")
        await principals(server, ["alice"])
        assert watch.tickets == [200, 200] and len(set(watch.sockets)) == 2

        # The token stops being valid (as if the operator rotated it), then the link drops:
        # the next ticket request gets 401 and the page asks for a token, without retrying.
        server.app[GATE].auth.tokens.clear()
        await drop_connections(server)
        await expect(page.get_by_test_id("auth-panel")).to_be_visible()
        await expect(page.get_by_test_id("auth-error")).to_contain_text("not valid")
        await expect(state).to_have_attribute("data-state", "unauthorized")
        await page.wait_for_timeout(1500)
        assert watch.tickets == [200, 200, 401] and len(watch.sockets) == 2
        assert await page.evaluate("myagentConsole.client.state") == "unauthorized"
        assert (await storage(page))["token"] is None
        await shot(page, "24-auth-token-revoked")
    assert watch.unexpected(LOAD_FAILED) == []


async def test_console_without_auth_asks_for_nothing(serve: Any) -> None:
    server = await serve(files=(WEATHER,))
    async with browser(server) as (page, problems):
        await expect(page.get_by_test_id("auth-panel")).to_have_count(0)
        await expect(page.get_by_test_id("sign-out")).to_have_count(0)
        await expect(page.get_by_test_id("empty-state")).to_be_visible()
        fetched = await page.evaluate(
            "performance.getEntriesByType('resource').map((e) => e.name)"
            ".filter((name) => name.includes('/auth/ticket'))"
        )
        assert fetched == []
        assert [c.principal for c in server.app[CONNECTIONS]] == [None]
    assert problems == []


# --- plain browser code: CORS, tickets -------------------------------------------------------

# Loaded by the pages below: each step has its own deadline and reports into #report.
PAGE_JS = """
window.sockets = [];
const within = (ms, promise, what) => Promise.race([promise, new Promise((_, reject) =>
  setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms))]);
function report(line) {
  let pre = document.getElementById("report");
  if (!pre) {
    document.body.replaceChildren(pre = document.createElement("pre"));
    pre.id = "report";
  }
  pre.textContent += line + "\\n";
}
async function fetchTicket(base, token) {
  try {
    const response = await within(5000, fetch(`${base}/auth/ticket`,
      { method: "POST", headers: { Authorization: `Bearer ${token}` } }), "ticket");
    const body = await response.json();
    report(`POST ${base}/auth/ticket: HTTP ${response.status}`);
    return { status: response.status, ticket: body.ticket ?? null, error: body.error ?? null };
  } catch (error) {
    report(`POST ${base}/auth/ticket failed: ${error.name}: ${error.message}`);
    return { status: null, ticket: null, error: `${error.name}: ${error.message}` };
  }
}
/** Opens a socket; {index, opened, first event name} or {opened, closed: code} if refused. */
function openSocket(url) {
  return within(5000, new Promise((resolve) => {
    const ws = new WebSocket(url);
    const index = window.sockets.push(ws) - 1;
    let opened = false, errored = false;
    ws.onopen = () => { opened = true; };
    ws.onerror = () => { errored = true; };
    ws.onmessage = (m) => {
      ws.onmessage = null;
      report(`WebSocket #${index}: open, first event ${JSON.parse(m.data).event}`);
      resolve({ index, opened, first: JSON.parse(m.data).event });
    };
    ws.onclose = (e) => {
      report(`WebSocket #${index}: ${opened ? "closed" : "failed to open"}, code ${e.code}`);
      resolve({ index, opened, errored, closed: e.code });
    };
  }), "socket");
}
/** One turn on an open socket: create a session, ask, the final answer. */
function runTurn(index, text) {
  const ws = window.sockets[index];
  return within(15000, new Promise((resolve, reject) => {
    ws.onmessage = (m) => {
      const event = JSON.parse(m.data);
      if (event.event === "agent.session_created") {
        const sid = event.session_id;
        ws.send(JSON.stringify({ event: "user.message", session_id: sid, content: text }));
      } else if (event.event === "agent.final_answer") {
        report(`final answer: ${event.content}`);
        resolve(event.content);
      } else if (["agent.error", "system.error"].includes(event.event)) {
        reject(new Error(`${event.event}: ${event.content}`));
      }
    };
    ws.send(JSON.stringify({ event: "user.create_session" }));
  }), "turn");
}
"""

# A module script that puts the browser client on window (from the page's own origin).
CLIENT_JS = """
const { MyAgentClient } = await import("/static/myagent-client.js");
window.MyAgentClient = MyAgentClient;
"""

FRONT_END = (
    '<!doctype html><html><head><meta charset="utf-8"><title>another origin</title>'
    '<link rel="icon" href="data:,">'
    f"<script>{PAGE_JS}</script></head>"
    "<body><h1>A front end on another origin</h1><pre id=report></pre></body></html>"
)


async def evaluate(page: Page, script: str, arg: Any = None) -> Any:
    """page.evaluate with a deadline of its own (the page's steps have theirs too)."""
    async with asyncio.timeout(30):
        return await page.evaluate(script, arg)


async def front_end(aiohttp_server: Any) -> Any:
    """A second server, on another loopback port, serving FRONT_END at / and the
    browser client at the path the myagent-ws server has it."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=FRONT_END, content_type="text/html")

    async def client(request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "myagent-client.js")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/static/myagent-client.js", client)  # a copy beside its own code
    return await aiohttp_server(app)


async def server_ticket(server: Any) -> str:
    """A ticket fetched the way a backend would: no Origin, the token in a header."""
    status, body, _ = await post_ticket(server, TOKEN)
    assert status == 200
    return body["ticket"]


@pytest.mark.parametrize("allowed", ["local-default", "listed"])
async def test_front_end_on_another_origin_fetches_a_ticket_and_runs_a_turn(
    serve: Any,
    aiohttp_server: Any,
    tokens_file: str,
    monkeypatch: pytest.MonkeyPatch,
    allowed: str,
) -> None:
    front = await front_end(aiohttp_server)
    origin = f"http://127.0.0.1:{front.port}"
    origins = (origin,) if allowed == "listed" else ()
    server = await serve(files=(WEATHER,), auth_tokens_file=tokens_file, allowed_origins=origins)
    base = str(server.make_url("/")).rstrip("/")
    assert base != origin  # another port: another origin, so a real CORS request
    gate = gate_log(monkeypatch, server)
    async with chromium_page() as (page, watch):
        await page.goto(f"{origin}/")
        got = await evaluate(page, "([base, token]) => fetchTicket(base, token)", [base, TOKEN])
        assert got["status"] == 200 and got["ticket"], got
        url = ws_url(server, f"/?ticket={got['ticket']}")
        opened = await evaluate(page, "(url) => openSocket(url)", url)
        assert opened == {"index": 0, "opened": True, "first": "system.connected"}
        await principals(server, ["alice"])
        answer = await evaluate(page, "([i, text]) => runTurn(i, text)", [0, BEIJING])
        assert "北京" in answer and "25°C" in answer
        await expect(page.locator("#report")).to_contain_text("final answer")
        await shot(page, f"25-cross-origin-allowed-{allowed}")
    # The preflight, the ticket and the upgrade, each from the front end's origin, let in.
    assert gate == [
        ("OPTIONS", "/auth/ticket", origin, True),
        ("POST", "/auth/ticket", origin, True),
        ("GET", "/", origin, True),
    ]
    assert watch.errors == []


async def test_front_end_on_an_origin_not_allowed_gets_neither_ticket_nor_socket(
    serve: Any, aiohttp_server: Any, tokens_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    front = await front_end(aiohttp_server)
    origin = f"http://127.0.0.1:{front.port}"
    server = await serve(
        files=(WEATHER,), auth_tokens_file=tokens_file, allowed_origins=("https://only.example",)
    )
    base = str(server.make_url("/")).rstrip("/")
    # A good ticket, fetched outside the browser: the socket can only fail for its origin.
    ticket = await server_ticket(server)
    gate = gate_log(monkeypatch, server)
    async with chromium_page() as (page, watch):
        await page.goto(f"{origin}/")
        got = await evaluate(page, "([base, token]) => fetchTicket(base, token)", [base, TOKEN])
        assert got["status"] is None and got["ticket"] is None
        assert got["error"].startswith("TypeError")  # what fetch says when CORS fails
        url = ws_url(server, f"/?ticket={ticket}")
        refused = await evaluate(page, "(url) => openSocket(url)", url)
        assert refused == {"index": 0, "opened": False, "errored": True, "closed": 1006}
        report = page.locator("#report")
        await expect(report).to_contain_text("/auth/ticket failed: TypeError")
        await expect(report).to_contain_text("WebSocket #0: failed to open, code 1006")
        await shot(page, "26-cross-origin-refused")
        assert len(server.app[CONNECTIONS]) == 0
    # The browser's own words: the preflight was refused, and the upgrade answered 403.
    assert any("blocked by CORS policy" in e and "/auth/ticket" in e for e in watch.errors)
    assert any("Unexpected response code: 403" in e for e in watch.errors), watch.errors
    expected = re.compile("CORS policy|Unexpected response code: 403|Failed to load")
    assert watch.unexpected(expected) == []
    # The server refused the preflight and the upgrade for the origin, before any credential.
    assert gate == [("OPTIONS", "/auth/ticket", origin, False), ("GET", "/", origin, False)]
    # The ticket was not spent by the refused upgrade: it still opens a connection.
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url(f"/?ticket={ticket}")) as ws:
            assert (await ws.receive_json(timeout=5))["event"] == "system.connected"


async def test_client_on_another_origin_stops_on_a_wrong_token_then_runs_a_turn(
    serve: Any, aiohttp_server: Any, tokens_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """myagent-client.js copied next to a front end on another origin (as the README says):
    a wrong token is a readable 401 there too (the refusal carries CORS headers), so the
    client stops instead of retrying; the right one connects and runs a turn."""
    front = await front_end(aiohttp_server)
    origin = f"http://127.0.0.1:{front.port}"
    server = await serve(files=(WEATHER,), auth_tokens_file=tokens_file)
    url = ws_url(server)
    gate = gate_log(monkeypatch, server)
    async with chromium_page() as (page, watch):
        await page.goto(f"{origin}/")
        await page.add_script_tag(content=CLIENT_JS, type="module")
        await page.wait_for_function("!!window.MyAgentClient", timeout=10_000)
        refused = await evaluate(
            page,
            """async (url) => {
            window.states = [];
            window.client = new MyAgentClient({
              url, token: "not-the-token", backoff: { initialMs: 50 },
              onStateChange: ({ state, error }) => states.push([state, error?.code ?? null]),
            });
            try { await client.connect(); return "connected?"; }
            catch (error) { return [error.code, error.status, error.message, client.state]; }
            }""",
            url,
        )
        assert refused[:2] == ["unauthorized", 401] and refused[3] == "unauthorized"
        assert "not valid for this server" in refused[2]
        await page.wait_for_timeout(500)  # ten backoff delays of 50 ms: no retry came
        assert await page.evaluate("states") == [
            ["connecting", None],
            ["unauthorized", "unauthorized"],
        ]
        assert [g for g in gate if g[0] != "OPTIONS"] == [("POST", "/auth/ticket", origin, True)]
        assert len(server.app[CONNECTIONS]) == 0

        answer = await evaluate(
            page,
            """([token, text]) => new Promise(async (resolve, reject) => {
            setTimeout(() => reject(new Error("no final answer in 15 s")), 15000);
            client.token = token;
            client.on("agent.final_answer", (event) => resolve(event.content));
            await client.connect();
            client.send(await client.createSession("weather-assistant"), text);
            })""",
            [TOKEN, BEIJING],
        )
        assert "25°C" in answer
        await principals(server, ["alice"])
        await page.evaluate("(text) => report(`final answer: ${text}`)", answer)
        await shot(page, "27-cross-origin-client")
    assert [g for g in gate if g[0] != "OPTIONS"] == [
        ("POST", "/auth/ticket", origin, True),
        ("POST", "/auth/ticket", origin, True),
        ("GET", "/", origin, True),
    ]
    assert watch.unexpected(LOAD_FAILED) == []


async def test_a_ticket_opens_one_connection_from_a_same_origin_page(
    serve: Any, tokens_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(files=(WEATHER,), auth_tokens_file=tokens_file)
    base = str(server.make_url("/")).rstrip("/")
    gate = gate_log(monkeypatch, server)
    async with chromium_page() as (page, watch):
        await page.goto(f"{base}/")  # the console, which waits for a token meanwhile
        await page.add_script_tag(content=PAGE_JS)
        got = await evaluate(page, "(token) => fetchTicket('', token)", TOKEN)
        assert got["status"] == 200 and got["ticket"]
        url = ws_url(server, f"/?ticket={got['ticket']}")
        first = await evaluate(page, "(url) => openSocket(url)", url)
        assert first == {"index": 0, "opened": True, "first": "system.connected"}
        await principals(server, ["alice"])
        again = await evaluate(page, "(url) => openSocket(url)", url)
        assert again == {"index": 1, "opened": False, "errored": True, "closed": 1006}
        answer = await evaluate(page, "([i, text]) => runTurn(i, text)", [0, BEIJING])
        assert "25°C" in answer
        await expect(page.locator("#report")).to_contain_text("WebSocket #1: failed to open")
        await shot(page, "28-ticket-used-twice")
        await principals(server, ["alice"])
    # Chromium's words for the refused upgrade (401 with WWW-Authenticate: Bearer).
    refused = re.compile(r"WebSocket connection to .* failed: HTTP Authentication failed")
    assert any(refused.search(e) for e in watch.errors), watch.errors
    assert watch.unexpected(refused) == []
    # Same origin: no preflight; the second upgrade is let through the origin check and
    # refused for its ticket.
    assert gate == [
        ("POST", "/auth/ticket", base, True),
        ("GET", "/", base, True),
        ("GET", "/", base, True),
    ]


# --- the browser client: getTicket, retries -------------------------------------------------


async def test_client_get_ticket_is_asked_before_every_connection(
    serve: Any, tokens_file: str
) -> None:
    server = await serve(files=(WEATHER,), auth_tokens_file=tokens_file)
    base = str(server.make_url("/")).rstrip("/")
    async with chromium_page() as (page, watch):
        await page.goto(f"{base}/")  # the console, which waits for a token meanwhile
        await page.add_script_tag(content=CLIENT_JS, type="module")
        await page.wait_for_function("!!window.MyAgentClient", timeout=10_000)
        # An app that gets its tickets its own way (here: from the server, by hand).
        await evaluate(
            page,
            """(token) => {
            window.asked = 0; window.states = [];
            window.client = new MyAgentClient({
              backoff: { initialMs: 50 },
              getTicket: async ({ url, signal }) => {
                window.asked += 1;
                const r = await fetch("/auth/ticket", { method: "POST", signal,
                  headers: { Authorization: `Bearer ${token}` } });
                return (await r.json()).ticket;
              },
              onStateChange: ({ state, error }) => states.push([state, error?.code ?? null]),
            });
            return client.connect();
            }""",
            TOKEN,
        )
        await principals(server, ["alice"])
        await drop_connections(server)
        await page.wait_for_function("client.state === 'connected' && asked === 2", timeout=10_000)
        await principals(server, ["alice"])
        # getTicket saying "unauthorized" stops the client: no retry, connect() rejects.
        result = await evaluate(
            page,
            """async () => {
            client.close();
            client.getTicket = async () => {
              window.asked += 1;
              throw Object.assign(new Error("Your session with the app ended."),
                { code: "unauthorized" });
            };
            try { await client.connect(); return "connected?"; }
            catch (error) { return [error.code, error.message, client.state, client.error.code]; }
            }""",
        )
        assert result == [
            "unauthorized",
            "Your session with the app ended.",
            "unauthorized",
            "unauthorized",
        ]
        await page.wait_for_timeout(500)  # ten backoff delays of 50 ms
        assert await page.evaluate("asked") == 3
        states = await page.evaluate("states")
        assert states[:2] == [["connecting", None], ["connected", None]]
        assert states[-1] == ["unauthorized", "unauthorized"]
    assert watch.errors == []


async def test_client_retries_a_ticket_it_cannot_fetch_and_works_with_auth_off(
    serve: Any,
) -> None:
    server = await serve(files=(WEATHER,))
    async with browser(server) as (page, problems):
        await page.add_script_tag(content=CLIENT_JS, type="module")
        await page.wait_for_function("!!window.MyAgentClient", timeout=10_000)
        # A token against a server with auth off: tickets are handed out and ignored.
        connected = await evaluate(
            page,
            """async () => {
            const client = new MyAgentClient({ token: "any-token" });
            const info = await client.connect();
            const sid = await client.createSession("weather-assistant");
            client.close();
            return [typeof info.connection_id, sid.startsWith("s_")];
            }""",
        )
        assert connected == ["string", True]
        # Nothing listens where the ticket would come from: a network error, retried.
        errors = await evaluate(
            page,
            """(ticketUrl) => new Promise((resolve) => {
            const seen = [];
            const client = new MyAgentClient({
              token: "any-token",
              ticketUrl,
              backoff: { initialMs: 20, maxMs: 40 },
              onStateChange: ({ state, error }) => {
                if (error) seen.push([state, error.code]);
                if (seen.length === 3) { client.close(); resolve(seen); }
              },
            });
            client.connect().catch(() => {});
            })""",
            f"http://127.0.0.1:{free_port()}/auth/ticket",
        )
        assert errors == [["reconnecting", "network_error"]] * 3
    # The refused connections are the ones this test made.
    assert all("/auth/ticket" in p or "ERR_CONNECTION_REFUSED" in p for p in problems), problems
