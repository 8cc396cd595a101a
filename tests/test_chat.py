"""`myagent-ws chat`, the real console script, on a real pseudo-terminal against a real
server: streamed turns, y/n approvals, Ctrl-C, the slash commands, and a link cut mid-turn
by a TCP proxy. Piped input, errors in words, and the client's on_state hook too."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.linkcut import LinkCutter
from myagent import create_react_agent
from myagent_ws.client import connect
from myagent_ws.keys import SESSIONS
from tests.agents import FAST, PacedModel, WaitTool, bookings, counting_agent, key, waiting_agent
from tests.client import ws_url
from tests.conftest import ASK, BEIJING, BOOKING, CLI, ROOT, TOKENS, WEATHER

# CSI and OSC sequences, and the other two-byte escapes: what a screen would not show.
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_=>]")
QUESTION = re.escape(
    'Allow tool book_table with {"restaurant": "Luigi", "people": 2, "time": "19:30"}? [y/n]'
)


def chat_env(**extra: str) -> dict[str, str]:
    """This environment with `extra`, less a token the person running the tests may have."""
    env = {name: value for name, value in os.environ.items() if name != "MYAGENT_WS_TOKEN"}
    return {**env, **extra}


def _take_terminal() -> None:
    """In the child, after setsid: make the pty (its stdin) the controlling terminal, so
    that Ctrl-C typed on it is a SIGINT, as in a real terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`myagent-ws chat ARGS` on a pseudo-terminal of 50x200, read and typed at as a person
    would: `expect` waits (bounded) for a pattern (^ is a line start) in what the screen has
    shown since the last match, escapes and carriage returns removed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.fd, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            [CLI, "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=chat_env(TERM="xterm-256color", **(env or {})),
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.raw = bytearray()
        self.seen = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        answered = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the program and its terminal are gone
                return
            if not data:
                return
            self.raw += data
            # prompt_toolkit asks where the cursor is; a terminal answers (the bottom line,
            # as on a terminal that has scrolled, so no space is reserved below the prompt).
            while self.raw.count(b"\x1b[6n") > answered:
                os.write(self.fd, b"\x1b[50;1R")
                answered += 1

    @property
    def text(self) -> str:
        text = ESCAPES.sub("", bytes(self.raw).decode(errors="replace"))
        return re.sub(".\x08", "", text).replace("\r", "")  # backspaced, and line starts

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    async def expect(self, pattern: str, timeout_s: float = 5.0) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout_s
        while not (match := regex.search(self.text, self.seen)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not shown within {timeout_s} s; since the last match:\n"
                    + self.text[self.seen :]
                )
            await asyncio.sleep(0.02)
        self.seen = match.end()
        return match

    async def exit_code(self, timeout_s: float = 5.0) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, "the chat did not exit"
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        self.reader.join(timeout=5)
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(*args: str, env: dict[str, str] | None = None) -> Terminal:
        opened.append(Terminal(*args, env=env))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


async def run_piped(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Any:
    """The chat with stdin and stdout as pipes: (exit status, everything it printed)."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "chat",
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=chat_env(**(env or {})),
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), 10)
    return proc.returncode, out.decode()


async def test_a_turn_completes_under_a_pty(serve: Any, terminal: Any) -> None:
    server = await serve()
    term = terminal(ws_url(server))
    header = await term.expect(
        r"Connected to (\S+) · agent weather-assistant · session (s_\S+) · offline model\n"
    )
    assert header[1] == ws_url(server)
    assert header[2] in server.app[SESSIONS].sessions
    await term.expect("weather-assistant>")
    term.type(f"{BEIJING}\r")
    await term.expect('^⚙ get_weather\\(city="北京"\\)\n')
    await term.expect(r"^  ↳ 北京：晴，气温 25°C，湿度 40%，北风 2 级。 \((<1|\d+) ms\)\n")
    await term.expect("^查询结果：北京：晴，气温 25°C，湿度 40%，北风 2 级。\n")
    await term.expect("weather-assistant>")
    term.type("\x04")  # Ctrl-D
    assert await term.exit_code() == 0


async def test_approvals_are_asked_with_y_or_n(serve: Any, terminal: Any) -> None:
    server = await serve(files=(BOOKING,))
    term = terminal(ws_url(server))
    session_id = (await term.expect(r"session (s_\S+)"))[1]
    booked = bookings(server, session_id)
    await term.expect("booking-assistant>")
    term.type(f"{ASK}\r")
    await term.expect('⚙ book_table\\(restaurant="Luigi", people=2, time="19:30"\\)\n')
    await term.expect(QUESTION)
    term.type("maybe\r")  # neither: asked again
    await term.expect(QUESTION)
    term.type("y\r")
    await term.expect(r"↳ Booked a table at Luigi for 2 at 19:30 \(booking #1 in this")
    await term.expect("booking-assistant>")
    assert [b["restaurant"] for b in booked] == ["Luigi"]
    term.type("Book a table for 4 at Mario at 20:00\r")
    await term.expect(r"Allow tool book_table .*\? \[y/n\]")
    term.type("n\r")
    await term.expect("↳ not run: declined\n")
    await term.expect("The user declined this call to book_table, so it did not run.\n")
    await term.expect("booking-assistant>")
    term.type("Book a table for 3 at Nino at 21:00\r")
    await term.expect(r"Allow tool book_table .*\? \[y/n\]")
    term.type("\x03")  # Ctrl-C at the question cancels the turn; the tool does not run
    await term.expect("^cancelled\n")
    await term.expect("booking-assistant>")
    assert [b["restaurant"] for b in booked] == ["Luigi"]


async def test_ctrl_c_cancels_the_running_turn_not_the_program(serve: Any, terminal: Any) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    term = terminal(ws_url(server))
    session_id = (await term.expect(r"session (s_\S+)"))[1]
    session = server.app[SESSIONS].sessions[session_id]
    await term.expect("waiter>")
    first, second = key(), key()
    term.type(f"{first}\r")
    await term.expect(f'⚙ wait\\(key="{first}"\\)\n')
    async with asyncio.timeout(5):
        await WaitTool.entered(first).wait()
    term.type("\x03")  # the terminal makes it a SIGINT: the turn runs, no prompt does
    await term.expect("^cancelled\n")
    await term.expect("waiter>")
    assert not session.busy and term.proc.poll() is None
    term.type("\x03")  # at the prompt: it does not exit
    await term.expect(r"\(Ctrl-D or /quit exits\)")
    await term.expect("waiter>")
    WaitTool.gate(second).set()
    term.type(f"{second}\r")
    await term.expect(f"^done: gate {second} opened\n")
    await term.expect("waiter>")
    term.type(f"{key()}\r")  # a turn the server ends, not the person: said in words
    await term.expect("⚙ wait")
    await server.app[SESSIONS].end(session, "reloaded")
    await term.expect(r"^Interrupted: The turn was stopped: the session ended \(reloaded\)")
    await term.expect("waiter>")
    term.type("/quit\r")
    assert await term.exit_code() == 0


async def test_a_second_ctrl_c_stops_waiting_when_the_server_cannot_answer(
    serve: Any, terminal: Any
) -> None:
    server = await serve(files=(), agents=(waiting_agent(),))
    gate = key()
    async with LinkCutter(server.port) as cutter:
        try:
            term = terminal(cutter.url)
            await term.expect("waiter>")
            term.type(f"{gate}\r")
            await term.expect(f'⚙ wait\\(key="{gate}"\\)\n')
            await cutter.close()  # the link drops and the server is out of reach
            await term.expect("^reconnecting…\n")
            term.type("\x03")
            await term.expect(r"cancelling… \(Ctrl-C again stops waiting\)\n")  # after an echoed ^C
            term.type("\x03")
            await term.expect("Stopped waiting; the turn is cancelled.\n")
            await term.expect("waiter>")
            term.type("/quit\r")  # while still offline
            assert await term.exit_code() == 0
        finally:
            WaitTool.gate(gate).set()


async def test_agents_new_help_and_quit(serve: Any, terminal: Any) -> None:
    server = await serve(files=(WEATHER, BOOKING), default="weather-assistant")
    sessions = server.app[SESSIONS].sessions
    term = terminal(ws_url(server))
    first = (await term.expect(r"session (s_\S+)"))[1]
    await term.expect("weather-assistant>")
    term.type("/agents\r")
    await term.expect(r"^\* weather-assistant  Answers weather .*\[get_weather, get_city_info\]\n")
    await term.expect(r"^  booking-assistant  Books restaurant tables.*\[book_table\]\n")
    term.type("/new booking-assistant\r")
    second = (await term.expect(r"New session · agent booking-assistant · session (s_\S+)"))[1]
    await term.expect("booking-assistant>")
    term.type("/new\r")  # another of the same agent
    third = (await term.expect(r"New session · agent booking-assistant · session (s_\S+)"))[1]
    await term.expect("booking-assistant>")
    assert len({first, second, third}) == 3
    async with asyncio.timeout(5):  # each new session ended the one before
        while first in sessions or second in sessions:
            await asyncio.sleep(0.02)
    assert third in sessions
    term.type("/new nope\r")
    await term.expect("Cannot start a session: No agent is named 'nope'")
    await term.expect("booking-assistant>")  # still in the session it had
    term.type("/help\r")
    await term.expect(r"/new \[NAME\] +a new session")
    await server.app[SESSIONS].end(sessions[third], "reloaded")  # as --reload does
    term.type("Book a table\r")
    await term.expect(r"^The session has ended; /new starts another\.\n")
    term.type("/new\r")
    await term.expect("New session · agent booking-assistant")
    await term.expect("booking-assistant>")
    term.type("/quit\r")
    assert await term.exit_code() == 0


async def test_a_dropped_link_mid_turn_loses_nothing_and_repeats_nothing(
    serve: Any, terminal: Any
) -> None:
    pieces = 40
    agent = create_react_agent(name="paced", tools=[], model=PacedModel(pieces, 0.04))
    server = await serve(files=(), agents=(agent,))
    async with LinkCutter(server.port) as cutter:
        term = terminal(cutter.url)
        await term.expect("paced>")
        term.type("go\r")
        start = (await term.expect("go\n")).end()
        for piece in (5, 15, 25):  # the answer streams: pieces show while the turn runs
            await term.expect(f"{piece};")
            cutter.cut()
            await term.expect("^reconnecting…\n")
            await term.expect("^reconnected\n")
        end = (await term.expect("paced>")).start()
        shown = term.text[start:end].split("\n")
        answer = [line for line in shown if line and line not in ("reconnecting…", "reconnected")]
        assert "".join(answer) == "".join(f"{i};" for i in range(pieces)), shown
        assert shown.count("reconnected") == 3


async def test_a_question_is_put_once_across_a_dropped_link(serve: Any, terminal: Any) -> None:
    server = await serve(files=(BOOKING,))
    async with LinkCutter(server.port) as cutter:
        term = terminal(cutter.url)
        session_id = (await term.expect(r"session (s_\S+)"))[1]
        booked = bookings(server, session_id)
        await term.expect("booking-assistant>")
        term.type(f"{ASK}\r")
        await term.expect(QUESTION)
        cutter.cut()  # the server asks again on the new link; the person is not
        await term.expect("reconnected\n")
        term.type("y\r")
        await term.expect(r"↳ Booked a table at Luigi for 2 at 19:30 \(booking #1 in this")
        after = term.seen
        await term.expect("booking-assistant>")
        assert "[y/n]" not in term.text[after:]
        assert len(booked) == 1


async def test_piped_input_is_read_line_by_line_and_printed_plainly(serve: Any) -> None:
    server = await serve(files=(WEATHER, BOOKING), default="weather-assistant")
    script = (
        "北京今天天气怎么样？\n/new booking-assistant\nBook a table for 2 at Luigi at 19:30\ny\n"
    )
    status, out = await run_piped(ws_url(server), stdin=script, env={"COLUMNS": "80"})
    assert status == 0, out  # the end of input ends the chat
    assert "\x1b" not in out
    lines = [re.sub(r"s_\S+", "s_…", line) for line in out.splitlines()]
    lines = [re.sub(r" \((<1|\d+) ms\)$", " (…)", line) for line in lines]
    # The result is clipped to one line of the terminal's width (COLUMNS without one).
    assert lines[8].startswith("  ↳ Booked a table at Luigi for 2 at 19:30 (booking #1 in th")
    assert lines[8].endswith("… (…)") and len(lines[8]) <= 80
    lines[8] = "  ↳ Booked…"
    assert lines == [
        f"Connected to {ws_url(server)} · agent weather-assistant · session s_… · offline model",
        "Ctrl-C cancels a turn, /help lists commands, /quit exits.",
        '⚙ get_weather(city="北京")',
        "  ↳ 北京：晴，气温 25°C，湿度 40%，北风 2 级。 (…)",
        "查询结果：北京：晴，气温 25°C，湿度 40%，北风 2 级。",
        "New session · agent booking-assistant · session s_… · offline model",
        '⚙ book_table(restaurant="Luigi", people=2, time="19:30")',
        'Allow tool book_table with {"restaurant": "Luigi", "people": 2, "time": "19:30"}? [y/n]',
        "  ↳ Booked…",
        "Here is what I found: Booked a table at Luigi for 2 at 19:30 (booking #1 in this "
        "conversation).",
    ]


async def test_errors_are_said_in_words_and_the_token_may_come_from_the_environment(
    serve: Any,
) -> None:
    server = await serve(files=(), agents=(counting_agent(),), auth_tokens=(TOKENS["alice"],))
    url = ws_url(server)
    status, out = await run_piped(url, "--token", "wrong")
    assert status == 1
    assert out == (
        f"Cannot connect to {url}: The server refused the token (401). "
        "Give one with --token or MYAGENT_WS_TOKEN.\n"
    )
    status, out = await run_piped(url, "--agent", "nope", env={"MYAGENT_WS_TOKEN": TOKENS["alice"]})
    assert status == 2
    assert out.startswith("Cannot start a session: No agent is named 'nope'")
    status, out = await run_piped(url, stdin="hi\n", env={"MYAGENT_WS_TOKEN": TOKENS["alice"]})
    assert status == 0 and out.endswith("\n1: hi\n"), out
    status, out = await run_piped("ws://127.0.0.1:9/")  # nothing listens on the discard port
    assert status == 1 and out.startswith("Cannot connect to ws://127.0.0.1:9/: "), out


async def test_on_state_hears_every_change_of_the_link(serve: Any) -> None:
    server = await serve(files=(), agents=(counting_agent(),))
    states: list[str] = []
    async with LinkCutter(server.port) as cutter:
        async with connect(cutter.url, backoff=FAST, on_state=states.append) as c:
            session = await c.create_session()
            assert session.info["llm"]["offline"] is True  # agent.session_created metadata
            cutter.cut()
            async with asyncio.timeout(5):
                while c.reconnects < 1:
                    await asyncio.sleep(0.01)
            assert await session.ask("still here") == "1: still here"
            assert states == ["connecting", "connected", "reconnecting", "connected"]
        assert states[-1] == "closed"


async def test_ctrl_c_with_piped_input_and_no_turn_exits_130(serve: Any) -> None:
    server = await serve()
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "chat",
        ws_url(server),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=chat_env(),
    )
    assert proc.stdout is not None
    header = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert header.startswith(b"Connected to")
    await asyncio.sleep(0.3)  # now waiting for a line that never comes
    proc.send_signal(2)
    assert await asyncio.wait_for(proc.wait(), 5) == 130
