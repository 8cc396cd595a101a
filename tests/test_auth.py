"""Who may connect: tokens (header, subprotocol, query), single-use tickets with CORS, the
Origin allow-list, the per-IP limits and the half-open handshake timeout, each against a
real server with real clients (aiohttp's and the `websockets` library's)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import connect as websockets_connect

from myagent_ws.sessions import new_session_id
from tests.client import ticket, upgrade, ws_url
from tests.conftest import TOKENS, WEATHER


async def run_turn(ws: Any) -> str:
    """Create a session and run one turn on an open `websockets` connection; the answer."""
    await ws.send(json.dumps({"event": "user.create_session"}))
    sid = None
    async with asyncio.timeout(10):
        while True:
            event = json.loads(await ws.recv())
            if event["event"] == "agent.session_created":
                sid = event["session_id"]
                await ws.send(json.dumps({"event": "user.message", "session_id": sid,
                                          "content": "北京今天天气怎么样？"}))  # fmt: skip
            elif event["event"] == "agent.final_answer":
                return event["content"]


# --- auth off ---------------------------------------------------------------------------------


async def test_auth_off_lets_anyone_in_and_session_ids_carry_128_random_bits(serve):
    server = await serve()
    assert (await upgrade(server))[0] == 101
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for sid in ids:  # "s_" + 22 url-safe base64 characters = 132 bits from secrets
        assert sid.startswith("s_") and len(sid) == 24


async def test_tickets_work_with_auth_off_so_one_front_end_fits_both(serve):
    server = await serve()
    status, body, _ = await ticket(server, None)
    assert status == 200 and set(body) == {"ticket", "expires_in"}
    assert (await upgrade(server, f"/?ticket={body['ticket']}"))[0] == 101


# --- tokens -----------------------------------------------------------------------------------


async def test_no_or_wrong_credential_gets_401_with_a_json_sentence(serve, tokens_file):
    server = await serve(auth_tokens_file=tokens_file)
    status, body, headers = await upgrade(server)
    assert status == 401 and body["error"] == "unauthorized"
    assert "Authorization: Bearer" in body["message"] and headers["WWW-Authenticate"] == "Bearer"
    status, body, _ = await upgrade(server, Authorization="Bearer not-a-token")
    assert status == 401 and "not valid" in body["message"]
    assert (await upgrade(server, "/?token=nope"))[0] == 401


async def test_bearer_header_and_query_token_let_in(serve, tokens_file):
    server = await serve(auth_tokens_file=tokens_file, auth_tokens=("bare-token-3",))
    assert (await upgrade(server, Authorization=f"Bearer {TOKENS['alice']}"))[0] == 101
    assert (await upgrade(server, Authorization="bearer bare-token-3"))[0] == 101
    assert (await upgrade(server, f"/?token={TOKENS['bob']}"))[0] == 101


async def test_subprotocol_bearer_token_and_the_server_selects_myagent_ws(serve, tokens_file):
    server = await serve(auth_tokens_file=tokens_file)
    url = ws_url(server)
    offer = ["myagent-ws", f"bearer.{TOKENS['alice']}"]
    async with websockets_connect(url, subprotocols=offer) as ws:
        assert ws.subprotocol == "myagent-ws"
        assert json.loads(await ws.recv())["event"] == "system.connected"
        assert await run_turn(ws)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets_connect(url, subprotocols=["myagent-ws", "bearer.wrong"]):
            pass
    assert refused.value.response.status_code == 401


# --- tickets ----------------------------------------------------------------------------------


async def test_ticket_is_single_use_and_expires(serve, tokens_file):
    server = await serve(auth_tokens_file=tokens_file, auth_ticket_ttl_s=0.5)
    assert (await ticket(server, None))[0] == 401
    assert (await ticket(server, "wrong"))[0] == 401
    status, body, headers = await ticket(server, TOKENS["alice"])
    assert status == 200 and body["expires_in"] == 0.5 and headers["Cache-Control"] == "no-store"
    assert (await upgrade(server, f"/?ticket={body['ticket']}"))[0] == 101
    status, body_again, _ = await upgrade(server, f"/?ticket={body['ticket']}")
    assert status == 401 and "already used or expired" in body_again["message"]
    _, late, _ = await ticket(server, TOKENS["alice"])
    await asyncio.sleep(0.7)
    assert (await upgrade(server, f"/?ticket={late['ticket']}"))[0] == 401
    # a ticket does not buy a ticket
    _, fresh, _ = await ticket(server, TOKENS["alice"])
    async with aiohttp.ClientSession() as http:
        url = server.make_url(f"/auth/ticket?ticket={fresh['ticket']}")
        async with http.post(url) as response:
            assert response.status == 401


async def test_ticket_cors_answers_allowed_origins_only(serve, tokens_file):
    server = await serve(auth_tokens_file=tokens_file)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    async with aiohttp.ClientSession() as http:
        url = server.make_url("/auth/ticket")
        async with http.options(url, headers={"Origin": "http://localhost:5173", **preflight}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.options(url, headers={"Origin": "https://evil.example", **preflight}) as r:
            assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    status, _, headers = await ticket(server, TOKENS["bob"], Origin="http://127.0.0.1:3000")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:3000"
    # an allowed page can read a refusal, so it knows to stop retrying with a bad token
    status, _, headers = await ticket(server, "wrong", Origin="http://localhost:5173")
    assert status == 401 and headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    status, body, headers = await ticket(server, TOKENS["bob"], Origin="https://evil.example")
    assert status == 403 and body["error"] == "forbidden_origin"
    assert "Access-Control-Allow-Origin" not in headers


# --- origins ----------------------------------------------------------------------------------


async def test_default_origins_own_and_local_ones_but_no_other_site(serve):
    server = await serve()
    own = f"http://127.0.0.1:{server.port}"
    for origin in (own, "http://localhost:5173", "http://127.0.0.1:3000", "https://localhost"):
        assert (await upgrade(server, Origin=origin))[0] == 101, origin
    for origin in ("https://evil.example", "null", "http://localhost.evil.example"):
        status, body, _ = await upgrade(server, Origin=origin)
        assert status == 403 and body["error"] == "forbidden_origin", origin
    # DNS rebinding: a site whose own name resolves to this loopback server is not its origin
    rebound = f"evil.example:{server.port}"
    assert (await upgrade(server, Origin=f"http://{rebound}", Host=rebound))[0] == 403


async def test_allowed_origin_list_replaces_the_local_default(serve):
    server = await serve(allowed_origins=("https://app.example.com",))
    assert (await upgrade(server, Origin="https://app.example.com"))[0] == 101
    assert (await upgrade(server, Origin="http://localhost:5173"))[0] == 403
    assert (await upgrade(server, Origin=f"http://127.0.0.1:{server.port}"))[0] == 101
    anyone = await serve(allowed_origins=("*",))
    assert (await upgrade(anyone, Origin="https://evil.example"))[0] == 101
    # any origin may fetch a ticket, but never with the user's cookies
    status, _, headers = await ticket(anyone, None, Origin="https://evil.example")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://evil.example"
    assert "Access-Control-Allow-Credentials" not in headers


# --- per-IP limits ----------------------------------------------------------------------------


async def test_failed_authentications_are_rate_limited_per_ip(serve, tokens_file):
    server = await serve(auth_tokens_file=tokens_file, max_auth_failures_per_ip=3)
    me = {"X-Forwarded-For": "203.0.113.7"}  # the test's peer, 127.0.0.1, is a trusted proxy
    for _ in range(3):
        assert (await upgrade(server, Authorization="Bearer guess", **me))[0] == 401
    good = f"Bearer {TOKENS['alice']}"
    status, body, headers = await upgrade(server, Authorization=good, **me)
    assert status == 429 and body["error"] == "too_many_failures"
    assert int(headers["Retry-After"]) >= 1
    assert (await ticket(server, TOKENS["alice"], **me))[0] == 429
    other = {"X-Forwarded-For": "203.0.113.8"}
    assert (await upgrade(server, Authorization=good, **other))[0] == 101


async def test_forwarded_for_counts_only_from_trusted_proxies(serve, tokens_file):
    server = await serve(
        auth_tokens_file=tokens_file, max_auth_failures_per_ip=2, forwarded_allow_ips=("10.0.0.1",)
    )
    for n in range(2):  # each claims another address; the peer is what counts
        await upgrade(
            server, Authorization="Bearer guess", **{"X-Forwarded-For": f"198.51.100.{n}"}
        )
    status, _, _ = await upgrade(
        server, Authorization=f"Bearer {TOKENS['bob']}", **{"X-Forwarded-For": "198.51.100.9"}
    )
    assert status == 429


async def test_a_client_is_its_address_or_its_ipv6_64_and_never_a_header_made_up(
    serve, tokens_file
):
    server = await serve(auth_tokens_file=tokens_file, max_auth_failures_per_ip=2)

    async def fail(forwarded: str) -> int:
        return (await upgrade(server, Authorization="Bearer guess",
                              **{"X-Forwarded-For": forwarded}))[0]  # fmt: skip

    assert await fail("2001:db8:1:2::1") == 401
    assert await fail("2001:db8:1:2::ffff") == 401  # the same /64: one client
    assert await fail("2001:db8:1:2:abcd::9") == 429
    assert await fail("2001:db8:1:3::1") == 401  # the next /64 is another
    # Not an address: the header is trusted no further, and the peer (127.0.0.1) counts.
    assert await fail("not-an-ip") == 401
    assert await fail("also, not-an-ip") == 401
    assert await fail("x" * 5000) == 429


async def test_connections_per_ip_are_limited_and_freed_on_close(serve):
    server = await serve(max_connections_per_ip=2)
    url = server.make_url("/")
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(url)
        second = await http.ws_connect(url)
        status, body, headers = await upgrade(server)
        assert status == 429 and body["error"] == "too_many_connections"
        assert "2 open connections" in body["message"] and headers["Retry-After"]
        assert (await upgrade(server, **{"X-Forwarded-For": "192.0.2.1"}))[0] == 101
        await first.close()
        for _ in range(50):  # the server sees the close a moment later
            if (await upgrade(server))[0] == 101:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the closed connection's slot was not freed")
        await second.close()


def test_half_open_handshakes_time_out_but_open_websockets_stay(cli_server):
    server = cli_server(WEATHER, "--handshake-timeout-s", "1")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed_after = None
        for _ in range(50):  # a header line every 0.2 s, never the blank line that ends them
            try:
                slow.sendall(b"X-Slow: 1\r\n")
                slow.settimeout(0.2)
                if slow.recv(100) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None and closed_after < 4, closed_after

    async def idle_then_talk() -> str:
        async with websockets_connect(server.url) as ws:
            await ws.recv()
            await asyncio.sleep(2.5)  # idle past the handshake timeout
            return await run_turn(ws)

    assert asyncio.run(idle_then_talk())


# --- what the logs show -----------------------------------------------------------------------


async def test_a_bearer_offer_without_myagent_ws_is_refused_before_aiohttp_logs_it(
    serve, tokens_file, caplog
):
    server = await serve(auth_tokens_file=tokens_file)
    offer = {"Sec-WebSocket-Protocol": f"bearer.{TOKENS['alice']}"}
    status, body, _ = await upgrade(server, **offer)
    assert status == 400 and body["error"] == "bad_subprotocol"
    assert "myagent-ws, bearer.<token>" in body["message"]
    assert TOKENS["alice"] not in caplog.text


def test_debug_logs_never_show_tokens_or_tickets(cli_server, tokens_file):
    server = cli_server(WEATHER, "--debug", "--auth-tokens-file", tokens_file)

    async def use_every_credential() -> str:
        issued = (await ticket(server, TOKENS["alice"]))[1]["ticket"]
        async with websockets_connect(f"{server.url}/?ticket={issued}") as ws:
            await ws.recv()
            await run_turn(ws)
        async with websockets_connect(f"{server.url}/?token={TOKENS['bob']}") as ws:
            await ws.recv()
        async with websockets_connect(f"{server.url}/?tok%65n={TOKENS['bob']}") as ws:
            await ws.recv()  # an encoded name is still the token parameter, and still hidden
        return issued

    issued = asyncio.run(use_every_credential())
    output = server.stop()
    assert "ticket=***" in output and "token=***" in output
    assert re.search(r"c_[0-9a-f]{6}_1: from 127\.0\.0\.1 as alice", output), output
    for secret in (issued, *TOKENS.values()):
        assert secret not in output


# --- bounds -----------------------------------------------------------------------------------


async def test_unused_tickets_and_failing_clients_are_bounded(monkeypatch, tokens_file):
    """The memory store keeps at most MAX_TICKETS tickets (the oldest unused one goes),
    and the gate remembers at most MAX_TRACKED_CLIENTS failing clients (the longest quiet
    go; a lockout in force is not wiped by a flood of others)."""
    import myagent_ws.gate as gate_module
    from myagent_ws.auth import Auth
    from myagent_ws.gate import Gate
    from myagent_ws.plugins import make_plugin_manager
    from myagent_ws.settings import Settings
    from myagent_ws.store import MemoryStore

    monkeypatch.setattr("myagent_ws.store.MAX_TICKETS", 3)
    store = MemoryStore()
    for n in range(5):
        await store.issue_ticket(f"t{n}", "alice", 30)
    assert len(store._tickets) == 3
    assert await store.redeem_ticket("t0") is None and await store.redeem_ticket("t4") == "alice"

    monkeypatch.setattr(gate_module, "MAX_TRACKED_CLIENTS", 4)
    settings = Settings(auth_tokens_file=tokens_file, max_auth_failures_per_ip=2)
    gate = Gate(settings, Auth(settings, make_plugin_manager().hook, store))
    for _ in range(2):
        gate._failed("203.0.113.1")  # locked out
    for n in range(10):
        gate._failed(f"198.51.100.{n}")
        gate._failed("203.0.113.1")  # still failing: never the longest quiet
    assert len(gate.failures) <= 4 and gate._retry_after("203.0.113.1") > 0
