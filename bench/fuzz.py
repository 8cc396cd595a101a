"""Protocol fuzzer: frames drawn from schemas/ and mutated, sent to a real server.

    .venv/bin/python bench/fuzz.py --frames 100000          # starts its own server
    .venv/bin/python bench/fuzz.py --frames 5000 --seed 7 --json
    .venv/bin/python bench/fuzz.py --url ws://127.0.0.1:8080/ --window 1

Why: whatever a client sends must get schema-valid replies (a system.error with a protocol
code, or valid events), never a crash, a stack trace or a hung connection, and the same
connection must still run a normal turn afterwards. tests/test_fuzz.py runs 5,000 frames.

How: hypothesis-jsonschema draws frames from each user.*.json schema ($refs inlined here)
and hypothesis strategies mutate them: wrong types and missing fields, huge values around
the 1 MiB frame limit (never past the 8 MiB ceiling, which closes the socket by design),
deep nesting, odd unicode, invalid JSON, non-objects, binary frames, unknown and server
event names, and valid frames in the wrong state (sessions that do not exist, are
another connection's or have ended; a user.response nothing waits for). Drawing is slow,
so `--unique` distinct frames are drawn (reproducibly per `--seed`) and cycled through;
sessions are named at send time from those alive then. Each connection sends its share,
waits every `--window` frames for a barrier (`--window 1` pins a bad reply to its frame),
checks every reply (JSON, Protocol.check_outbound, error code, no traceback or path), then
runs a turn. Without --url it serves examples/ws_weather_agent.py (offline model, rate
limits lifted) on a free loopback port; a --url server needs the same lifted limits.
Exits non-zero on a crash, trace, invalid reply, hang or failed final turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script: see run.py
from bench import multinode
from bench.harness import NO_RATE_LIMIT
from myagent_ws import protocol
from myagent_ws.client import TERMINAL

LIMIT = 1 << 20  # the server's default max_frame_bytes; 8x that closes the socket (1009)
AGENT, QUESTION = "weather-assistant", "北京今天天气怎么样？"
BARRIER, MAX_OWNED = "fuzz-barrier-", 48  # a connection ends its oldest sessions past that
TRACES = ("Traceback (most recent call last)", 'File "', '.py", line', "site-packages",
          "/usr/lib", str(multinode.ROOT))  # fmt: skip
SCHEMAS, PROTOCOL = protocol.load_schemas(), protocol.Protocol()
ODD = [*"\ud800\udfff\udbff\ude00\x00\u202e\u200f\u2066\ufeff\ufffe\uffff\U0010ffff",
       *"\U0001fffe😀\u0301\u200b\u2028\x7f\x85中İ\\\"", "👩‍👩‍👧"]  # fmt: skip
ODD_EVENTS = (
    "user.dance|USER.MESSAGE|user.message | user.message|user.||user|__proto__|"
    "user.message\x00|user.message.x|user.list_agents\u200b|usеr.message"
).split("|")
PATHS = ("event session_id content metadata step_id timestamp seq content/last_seq "
         "content/last_event_id content/approved content/agent metadata/agent").split()  # fmt: skip
SLOTS = ("keep", "own", "own", "other", "ended")  # whose session a frame names, at send time
SIZES = (LIMIT - 64, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 4096, 2 * LIMIT, 7 * LIMIT)
DEPTHS = (64, 254, 255, 256, 990, 1000, 1100, 10_000, 100_000)
# name: (UTF-8 bytes per unit, or 0 when the size is a nesting depth; raw JSON of n units)
PADS: dict[str, tuple[int, Callable[[int], str]]] = {
    "ascii": (1, lambda n: '"' + "x" * n + '"'),
    "utf8": (2, lambda n: '"' + "é" * n + '"'),
    "emoji": (4, lambda n: '"' + "😀" * n + '"'),
    "escapes": (2, lambda n: '"' + "\\n" * n + '"'),
    "array": (2, lambda n: "[" + "0," * n + "0]"),
    "digits": (1, lambda n: "9" * max(n, 1)),
    "dup-keys": (6, lambda n: "{" + '"a":0,' * n + '"a":1}'),
    "deep-array": (0, lambda n: "[" * n + "]" * n),
    "deep-object": (0, lambda n: '{"a":' * n + "0" + "}" * n),
}
MARK = "\x00pad\x00"
MARK_JSON = json.dumps(MARK)
# Each kind's share of the corpus (%); huge frames are few, each is megabytes.
WEIGHTS = {"schema": 12, "state": 22, "wrong_type": 14, "extra": 5, "unicode": 10,
           "invalid_json": 10, "non_object": 4, "binary": 4, "unknown_event": 6,
           "server_event": 4, "deep": 3, "huge": 1}  # fmt: skip
# One frame as drawn: ("json", frame, slot, escape), ("pad", frame, slot, key, pad, size),
# ("text", str) or ("bytes", bytes).
Item = tuple[Any, ...]


def inline(node: Any) -> Any:
    """`node` with each $ref to another schema file replaced by what it names, and objects
    closed to unknown properties (drawing those is slow; the "extra" mutation adds them)."""
    if isinstance(node, list):
        return [inline(item) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        target, _, pointer = ref.partition("#")
        resolved = SCHEMAS[target.removesuffix(".json")]
        for part in filter(None, pointer.split("/")):
            resolved = resolved[part]
        return inline(resolved)
    drop = ("description", "title", "$id", "$schema", "$defs")
    out = {key: inline(value) for key, value in node.items() if key not in drop}
    if "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def client_schema(name: str) -> dict[str, Any]:
    """A user.* schema flattened for drawing: the envelope's properties merged in."""
    schema = inline(SCHEMAS[name])
    props: dict[str, Any] = {}
    required: set[str] = set()
    for part in (schema, *schema.get("allOf", ())):
        required |= set(part.get("required", ()))
        for key, sub in part.get("properties", {}).items():
            props[key] = {"allOf": [props[key], sub]} if key in props else sub
    closed = {"type": "object", "properties": props, "additionalProperties": False}
    return {**closed, "required": sorted(required)}


def draw(strategy: st.SearchStrategy[Any], count: int, seed: str, batch: int = 10) -> list[Any]:
    """`count` values of `strategy`, drawn in bulk by hypothesis (reproducible per seed)."""
    out: list[Any] = []
    for attempt in range(20):
        if len(out) >= count:
            break
        examples = -(-(count - len(out)) // batch)

        @hypothesis_seed(random.Random(f"{seed}:{attempt}").getrandbits(64))
        @settings(max_examples=examples, database=None, deadline=None, derandomize=False,
                  phases=[Phase.generate], print_blob=False,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.lists(strategy, min_size=batch, max_size=batch))
        def collect(values: list[Any]) -> None:
            out.extend(values)

        collect()
    return out[:count]


def jtype(value: Any) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


def mutators(frames: list[dict[str, Any]]) -> dict[str, st.SearchStrategy[Item]]:
    """One strategy per kind of frame, over the schema-drawn `frames`."""
    base, slots, flags = st.sampled_from(frames), st.sampled_from(SLOTS), st.booleans()
    odd_text = st.lists(st.sampled_from(ODD) | st.characters(), min_size=1, max_size=24)
    odd = odd_text.map("".join)
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16)
    values = st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd, inner, max_size=3),
        max_leaves=6,
    )
    seq, sid = st.integers(0, 2**53 - 1), st.text("0123456789abcdef", max_size=24)

    def shape(event: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        sessions = {"session_id": sid.map("s_".__add__)} if event != "user.create_session" else {}
        return st.fixed_dictionaries({"event": st.just(event), **sessions, **fields})

    state = st.one_of(
        shape("user.message", content=st.sampled_from([QUESTION, "Weather in Paris?"]) | odd),
        shape("user.cancel"),
        shape("user.end_session"),
        shape("user.response", step_id=st.text(max_size=20),
              content=st.dictionaries(st.sampled_from(["approved", "confirmed"]), st.booleans(),
                                      min_size=1)),
        shape("user.ack", content=st.builds(lambda n: {"last_seq": n}, seq)
              | st.builds(lambda n: {"last_event_id": f"x:{n}"}, seq)),
        shape("user.reconnect", content=st.none() | st.builds(lambda n: {"last_seq": n}, seq)),
        shape("user.create_session", content=st.fixed_dictionaries(
            {"agent": st.sampled_from([AGENT, None, "nope"])})),
    )  # fmt: skip

    @st.composite
    def wrong_type(draw: Any) -> Item:
        frame = holder = json.loads(json.dumps(draw(base)))  # a deep copy
        key, _, sub = draw(st.sampled_from(PATHS)).partition("/")
        if sub:
            holder = frame[key] = frame[key] if isinstance(frame.get(key), dict) else {}
            key = sub
        old = holder.get(key, MARK)
        new = draw(st.just(MARK) | values.filter(lambda v: jtype(v) != jtype(old)))
        if new is MARK:
            holder.pop(key, None)
        else:
            holder[key] = new
        return ("json", frame, "keep" if key == "session_id" else draw(slots), draw(flags))

    @st.composite
    def unicode(draw: Any) -> Item:
        frame, text = dict(draw(base)), draw(odd)
        key = draw(st.sampled_from(["session_id", "content", "step_id", "event", "agent", "key"]))
        if key == "key":  # an odd property name
            frame[text] = text
        elif key == "agent":
            frame["content"] = {"agent": text}
        else:
            frame[key] = text
        return ("json", frame, "keep" if key == "session_id" else draw(slots), draw(flags))

    @st.composite
    def invalid_json(draw: Any) -> str:
        text = json.dumps(draw(base))
        return draw(st.one_of(
            st.integers(0, len(text) - 1).map(lambda n: text[:n]),
            st.sampled_from([",", "}", "]", " x", "\x00", "{}", "//"]).map(text.__add__),
            st.just(text.replace('"', "'")),
            st.just("\ufeff" + text),
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e99999", "01", "-"]).map(
                lambda v: text[:-1] + ',"x":' + v + "}"),
            st.sampled_from(["", " ", "{", "nul", '{"event":}', '"\\ud800', '"\\x"', "[1,]",
                             '{"event":"user.list_agents",}', "9" * 5000]),
            st.text(max_size=64),
        ))  # fmt: skip

    def json_item(frames: st.SearchStrategy[Any], escape: Any = flags) -> st.SearchStrategy[Item]:
        return st.tuples(st.just("json"), frames, slots, escape)

    def with_event(names: st.SearchStrategy[str]) -> st.SearchStrategy[Item]:
        return json_item(st.builds(lambda f, e: {**f, "event": e}, base, names))

    def padded(pads: list[str], sizes: tuple[int, ...]) -> st.SearchStrategy[Item]:
        keys = st.sampled_from(["content", "session_id", "metadata", "step_id", "pad", None])
        return st.tuples(st.just("pad"), base, slots, keys, st.sampled_from(pads),
                         st.sampled_from(sizes))  # fmt: skip

    not_object = values.filter(lambda v: not isinstance(v, dict)) | st.builds(list, base)
    some_bytes = st.binary(max_size=64) | base.map(lambda f: json.dumps(f).encode())
    names = st.sampled_from(ODD_EVENTS) | st.text(max_size=30).filter(lambda e: e not in SCHEMAS)
    return {
        "schema": json_item(base),
        "state": st.tuples(st.just("json"), state, st.sampled_from(SLOTS[1:]), st.just(True)),
        "wrong_type": wrong_type(),
        "extra": json_item(st.builds(lambda f, x: {**x, **f}, base,
                                     st.dictionaries(odd, values, min_size=1, max_size=4))),
        "unicode": unicode(),
        "invalid_json": st.tuples(st.just("text"), invalid_json()),
        "non_object": st.tuples(st.just("text"), not_object.map(json.dumps)),
        "binary": st.tuples(st.just("bytes"), some_bytes),
        "unknown_event": with_event(names),
        "server_event": with_event(st.sampled_from(sorted(protocol.SERVER_EVENTS))),
        "deep": padded(["deep-array", "deep-object"], DEPTHS),
        "huge": padded([name for name, (unit, _) in PADS.items() if unit], SIZES),
    }  # fmt: skip


def make_corpus(unique: int, seed: int, per_schema: int = 12) -> list[Item]:
    """`unique` frames: schema-drawn ones and each kind of mutation, in WEIGHTS' shares."""
    frames = []
    for name in sorted(protocol.CLIENT_EVENTS):
        frames += draw(from_schema(client_schema(name)), per_schema, f"{seed}:{name}", 4)
    kinds, total = mutators(frames), sum(WEIGHTS.values())
    corpus = []
    for kind, weight in WEIGHTS.items():
        corpus += draw(kinds[kind], max(1, round(unique * weight / total)), f"{seed}:{kind}")
    random.Random(seed).shuffle(corpus)
    return corpus


def dumps(value: Any, escape: bool = True) -> str:
    text = json.dumps(value, ensure_ascii=escape)
    if not escape:
        try:
            text.encode()
        except UnicodeEncodeError:  # lone surrogates can only go as \ud800 escapes
            text = json.dumps(value)
    return text


@dataclass
class Stats:
    frames: int = 0
    control: int = 0
    replies: int = 0
    events: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # crash trace invalid hang turn
    closes: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, Any]] = field(default_factory=list)
    live: deque[tuple[str, int]] = field(default_factory=lambda: deque(maxlen=64))
    ended: deque[str] = field(default_factory=lambda: deque(maxlen=64))

    def problem(self, kind: str, detail: str, reply: str = "", sent: Any = ()) -> None:
        self.failures[kind] += 1
        if self.failures[kind] <= 5 and len(self.problems) < 30:
            self.problems.append({"kind": kind, "detail": detail, "reply": reply[:1000],
                                  "sent": list(sent)})  # fmt: skip


class Client:
    """One fuzzed connection; its reader task checks every frame the server sends."""

    def __init__(self, index: int, ws: aiohttp.ClientWebSocketResponse, stats: Stats,
                 seed: int, window: int) -> None:  # fmt: skip
        self.index, self.ws, self.stats, self.window = index, ws, stats, window
        self.rng = random.Random(f"{seed}:{index}")
        self.owned: deque[str] = deque()  # sessions attached here, oldest first
        self.sent: deque[str] = deque(maxlen=window + 1)  # the frames a bad reply may answer
        self.terminals: defaultdict[str, list[str]] = defaultdict(list)
        self.waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []
        self.closing = self.dead = self.finishing = False
        self.barriers = 0
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.check(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                self.stats.problem("invalid", "a binary frame", repr(msg.data[:500]), self.sent)
            else:
                if not self.closing:  # by the server: it has no reason to, here
                    code = self.ws.close_code
                    self.stats.closes[str(code)] += 1
                    detail = f"connection {self.index} closed ({code}, {msg.type.name})"
                    self.stats.problem("crash", detail, repr(msg.extra), self.sent)
                break
        self.dead = True
        for _, future in self.waiters:
            if not future.done():
                future.set_result(None)

    def check(self, text: str) -> None:
        stats = self.stats
        stats.replies += 1
        if any(mark in text for mark in TRACES):
            stats.problem("trace", "a stack trace or an internal path", text, self.sent)
        try:
            event = json.loads(text)
            PROTOCOL.check_outbound(event)
        except (ValueError, KeyError, TypeError, protocol.ProtocolError) as exc:
            stats.problem("invalid", repr(exc), text, self.sent)
            return
        name, sid = event["event"], event.get("session_id", "")
        code = event["metadata"]["code"] if name == "system.error" else None
        if code is not None and code not in protocol.ERROR_CODES:
            stats.problem("invalid", "an unknown error code", text, self.sent)
        elif code == "internal_error":  # a valid reply, but a server bug: keep its frames
            stats.problem("internal_error", "the server failed on a frame", text, self.sent)
        if not sid.startswith(BARRIER):
            (stats.codes if code else stats.events)[code or name] += 1
        if name in ("agent.session_created", "agent.session_resumed") and not self.finishing:
            if sid not in self.owned:
                self.owned.append(sid)
            stats.live.append((sid, self.index))
        elif name == "agent.session_end":
            with contextlib.suppress(ValueError):
                self.owned.remove(sid)
            stats.ended.append(sid)
        elif name in TERMINAL:
            self.terminals[sid].append(name)
        for waiter in [w for w in self.waiters if w[0](event)]:
            self.waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(event)

    async def send(self, data: str | bytes) -> bool:
        try:
            await (self.ws.send_bytes(data) if isinstance(data, bytes) else self.ws.send_str(data))
        except (aiohttp.ClientError, ConnectionError) as exc:
            if not self.dead:
                self.stats.problem("crash", f"sending failed: {exc!r}", "", self.sent)
            self.dead = True
        return not self.dead

    async def expect(self, match: Callable[[dict[str, Any]], bool], frame: dict[str, Any],
                     timeout_s: float) -> dict[str, Any] | None:  # fmt: skip
        """Send a control frame; the first event that `match`es (None on timeout or close)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append((match, future))
        try:
            self.stats.control += 1
            if not self.dead and await self.send(json.dumps(frame)):
                return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove((match, future))
        return None

    async def barrier(self) -> bool:
        """Wait until the server has answered every frame sent so far (a hang otherwise)."""
        self.barriers += 1
        sid = f"{BARRIER}{self.index}-{self.barriers}"
        frame = {"event": "user.cancel", "session_id": sid}
        if await self.expect(lambda e: e.get("session_id") == sid, frame, 60) is None:
            if not self.dead:
                detail = f"connection {self.index}: no reply in 60 s"
                self.stats.problem("hang", detail, "", self.sent)
            self.dead = True
        return not self.dead

    def render(self, item: Item) -> str | bytes:
        """The frame to send: session references resolved against the sessions alive now."""
        if item[0] in ("text", "bytes"):
            return item[1]
        frame, slot = item[1], item[2]
        if slot != "keep" and isinstance(frame.get("session_id"), str):
            others = [s for s, i in self.stats.live if i != self.index]
            pool = {"own": self.owned, "ended": self.stats.ended, "other": others}[slot]
            sid = self.rng.choice(pool) if pool else frame["session_id"]
            frame = {**frame, "session_id": sid}
            content = frame.get("content")
            if isinstance(content, dict) and isinstance(content.get("last_event_id"), str):
                seq = content["last_event_id"].rpartition(":")[2]
                frame["content"] = {**content, "last_event_id": f"{sid}:{seq}"}
        if item[0] == "json":
            return dumps(frame, item[3])
        key, (unit, body), size = item[3], PADS[item[4]], item[5]
        text = dumps({**frame, key: MARK}, False) if key else MARK_JSON
        if unit:  # size is the whole frame's UTF-8 length
            fixed = len(text.encode()) - len(MARK_JSON) + len(body(0).encode())
            size = max(0, (size - fixed) // unit)
        return text.replace(MARK_JSON, body(size), 1)

    async def fuzz(self, items: list[Item], deadline: float) -> None:
        for count, item in enumerate(items, 1):
            while len(self.owned) > MAX_OWNED and not self.dead:  # bounded, like the server
                self.stats.control += 1
                end = {"event": "user.end_session", "session_id": self.owned.popleft()}
                await self.send(json.dumps(end))
            if self.dead or time.monotonic() > deadline:
                return
            data = self.render(item)
            more = f" …({len(data)} long)" if len(data) > 300 else ""
            self.sent.append(repr(data[:300]) + more)
            if not await self.send(data):
                return
            self.stats.frames += 1
            if (count % self.window == 0 or count == len(items)) and not await self.barrier():
                return

    async def final_turn(self) -> bool:
        """A normal turn after the fuzz share: exactly one terminal event, a final answer."""
        self.finishing = True
        created = await self.expect(
            lambda e: (
                e["event"] == "agent.session_created"
                or (e["event"] == "system.error" and not e.get("session_id"))
            ),
            {"event": "user.create_session", "content": {"agent": AGENT}},
            30,
        )
        sid = created.get("session_id", "") if created else ""
        ask = {"event": "user.message", "session_id": sid, "content": QUESTION}
        end = {"event": "user.end_session", "session_id": sid}
        answered = sid and await self.expect(
            lambda e: e.get("session_id") == sid and e["event"] in TERMINAL, ask, 60
        )
        ended = sid and await self.expect(
            lambda e: e.get("session_id") == sid and e["event"] == "agent.session_end", end, 30
        )
        if answered and ended and self.terminals[sid] == ["agent.final_answer"]:
            return True
        detail = f"connection {self.index}: session {sid!r}, terminals {self.terminals.get(sid)}"
        self.stats.problem("turn", detail, json.dumps(created or answered or ended or {}))
        return False

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
            await asyncio.wait_for(self.ws.close(), 10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reader, 10)


async def watch(http: aiohttp.ClientSession, url: str, node: multinode.Node | None,
                stats: Stats, stop: asyncio.Event) -> None:  # fmt: skip
    """/health must keep answering 200 and the server process must keep running."""
    while True:
        if node is not None and not node.alive():
            detail = f"the server process exited with {node.proc.returncode}"
            stats.problem("crash", detail, node.output(4000))
            return
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status != 200:
                    stats.problem("crash", f"/health answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.problem("crash", f"/health did not answer: {exc!r}")
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run(frames: int = 5000, url: str | None = None, connections: int = 8, seed: int = 0,
              unique: int = 2000, window: int = 32,
              max_seconds: float = 900.0) -> dict[str, Any]:  # fmt: skip
    """Fuzz a server (a fresh one unless `url`); the report, whose "ok" says it passed."""
    started = time.monotonic()
    deadline, stats, node, log = started + max_seconds, Stats(), None, ""
    with tempfile.TemporaryDirectory(prefix="myagent-fuzz-") as logdir:
        if url is None:  # it starts while hypothesis draws
            args = [multinode.WEATHER, *NO_RATE_LIMIT, "--max-sessions-per-connection", "1000"]
            env = multinode.node_env()
            node = multinode.Node(0, multinode.free_port(), args, env, Path(logdir))
            url = node.url + "/"
        try:
            corpus = make_corpus(min(unique, frames), seed)
            generate_s = time.monotonic() - started
            if node is not None:
                await node.wait_health()
            ordered = [corpus[i % len(corpus)] for i in range(frames)]
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as http:
                health = url.replace("ws", "http", 1).rstrip("/") + "/health"
                watcher = asyncio.create_task(watch(http, health, node, stats, stop))
                sockets = [await http.ws_connect(url, max_msg_size=0) for _ in range(connections)]
                clients = [Client(i, ws, stats, seed, window) for i, ws in enumerate(sockets)]
                fuzz_start = time.monotonic()
                shares = [c.fuzz(ordered[c.index :: connections], deadline) for c in clients]
                await asyncio.gather(*shares)
                fuzz_s = time.monotonic() - fuzz_start
                turns = await asyncio.gather(*(c.final_turn() for c in clients))
                await asyncio.gather(*(c.close() for c in clients))
                stop.set()
                await watcher
        finally:
            if node is not None:
                await node.stop()
                log = node.output()
    traces = log.count("Traceback (most recent call last)")
    exceptions = Counter(re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception)): ", log, re.M))
    if traces:  # not on the wire, but a bug all the same (internal_error, most likely)
        first = log[log.find("Traceback") - 200 :][:2500]
        detail = f"{traces} tracebacks: {dict(exceptions)}"
        stats.problems.append({"kind": "server log", "detail": detail, "reply": first})
    report = {
        "frames": stats.frames, "unique_frames": len(corpus), "control_frames": stats.control,
        "replies": stats.replies, "error_codes": dict(stats.codes.most_common()),
        "events": dict(stats.events.most_common()), "crashes": stats.failures["crash"],
        "stack_traces": stats.failures["trace"], "invalid_replies": stats.failures["invalid"],
        "hangs": stats.failures["hang"], "connections": connections,
        "final_turns_ok": sum(turns), "final_turns_failed": connections - sum(turns),
        "server_closes": dict(stats.closes), "server_log_tracebacks": traces,
        "server_log_exceptions": dict(exceptions),
        "complete": stats.frames == frames, "generate_s": round(generate_s, 2),
        "fuzz_s": round(fuzz_s, 2), "frames_per_s": round(stats.frames / max(fuzz_s, 1e-9)),
        "elapsed_s": round(time.monotonic() - started, 2), "seed": seed,
        "problems": stats.problems,
    }  # fmt: skip
    # A traceback in the server's log (an internal_error reply) is a bug too, if not on the wire.
    failed = ("crashes", "stack_traces", "invalid_replies", "hangs", "final_turns_failed",
              "server_log_tracebacks")  # fmt: skip
    report["ok"] = report["complete"] and not any(report[key] for key in failed)
    return report


def table(report: dict[str, Any]) -> str:
    keys = ("frames unique_frames replies crashes stack_traces invalid_replies hangs "
            "final_turns_ok final_turns_failed server_log_tracebacks generate_s fuzz_s "
            "frames_per_s elapsed_s seed ok").split()  # fmt: skip
    lines = [f"{key:<24}{report[key]}" for key in keys] + ["error codes:"]
    lines += [f"  {code:<22}{count}" for code, count in report["error_codes"].items()]
    for problem in report["problems"][:5]:
        lines += [f"\n{problem['kind']}: {problem['detail']}", f"  reply: {problem['reply'][:900]}"]
        lines += [f"  sent: {frame}" for frame in problem.get("sent", [])[-5:]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--url", help="a running server on 127.0.0.1, e.g. ws://127.0.0.1:8080/")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unique", type=int, default=2000, help="distinct frames to draw")
    parser.add_argument("--window", type=int, default=32, help="frames between barriers")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.url and not args.url.startswith(("ws://127.0.0.1:", "ws://localhost:")):
        parser.error("the fuzzer talks to a server on 127.0.0.1 only")
    report = asyncio.run(run(args.frames, args.url, args.connections, args.seed, args.unique,
                             args.window, args.max_seconds))  # fmt: skip
    print(json.dumps(report, ensure_ascii=False) if args.json else table(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
