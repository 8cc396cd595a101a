"""`myagent-ws chat`: a terminal chat with one agent of a running server.

Built on `myagent_ws.client`, so a dropped link costs nothing: the client reconnects and
replays what was missed, and the turn on screen just goes on. On a terminal the input is a
prompt_toolkit prompt (line editing, history), and what is printed while a prompt waits
(a reconnect note) is drawn above it, not through it. When stdin or stdout is not a
terminal it reads lines and prints plain text, so scripts can pipe to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from typing import Any

import aiohttp
from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.utils import get_cwidth

from .client import Client, ClientError, Session

HELP = """\
/agents       the server's agents (* marks this one)
/new [NAME]   a new session, of agent NAME or of this one
/help         this list
/quit         exit (so does Ctrl-D); Ctrl-C cancels a running turn"""
# What a request fails with when the server refuses it or the link drops under it.
LINK_ERRORS = (ClientError, ConnectionError, aiohttp.ClientError)
STYLES = {"dim": "dim", "red": "fg:ansired", "yellow": "fg:ansiyellow", "cyan": "fg:ansicyan"}


def terminal_width() -> int:
    """Asked when a line is clipped, not per streamed token: the window may be resized."""
    return shutil.get_terminal_size().columns


def clip(text: str, width: int) -> str:
    """`text` on one line of at most `width` terminal cells: a tool result can be a page."""
    text = " ".join(str(text).split())
    if sum(map(get_cwidth, text)) <= width:
        return text
    out, used = [], 1  # room for the ellipsis
    for char in text:
        used += get_cwidth(char)
        if used > width:
            break
        out.append(char)
    return "".join(out) + "…"


def call_text(tool: str, args: dict[str, Any]) -> str:
    """get_weather(city="北京"): a tool call as it would read in Python, compact and exact."""
    shown = (f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in args.items())
    return f"{tool}({', '.join(shown)})"


def took(ms: float | None) -> str:
    if ms is None:
        return ""
    return " (<1 ms)" if ms < 1 else f" ({ms:.0f} ms)" if ms < 1000 else f" ({ms / 1000:.1f} s)"


class Screen:
    """All output goes through here. On a terminal prompt_toolkit prints it: at once while
    no prompt runs (so a turn's last words are out before the next prompt), above the prompt
    while one does. It tracks an open answer line, so that no line lands in the middle."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.open = False

    def _write(self, *parts: tuple[str, str]) -> None:
        if self.terminal:
            print_formatted_text(FormattedText(list(parts)), end="", flush=True)
        else:
            sys.stdout.write("".join(text for _, text in parts))
            sys.stdout.flush()

    def answer(self, text: str) -> None:
        """A piece of the streamed answer: no newline until the answer ends."""
        if text:
            self._write(("", text))
            self.open = True

    def end_answer(self) -> None:
        if self.open:
            self._write(("", "\n"))
            self.open = False

    def line(self, text: str, style: str = "") -> None:
        self._write(("", "\n" if self.open else ""), (STYLES.get(style, ""), text), ("", "\n"))
        self.open = False


class Chat:
    """One conversation at a time with one agent; /new replaces it."""

    def __init__(self, client: Client, screen: Screen, interactive: bool) -> None:
        self.client, self.screen = client, screen
        self.link = client.state  # as on_state last heard it
        client.on_state = self.on_state
        self.session: Session | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.interrupts = 0  # Ctrl-C presses during the running turn
        self.streamed = False  # this step's answer came in pieces, so it is on screen
        self.cancelling: asyncio.Task[None] | None = None  # held, or it may be collected
        self.prompt = PromptSession[str]() if interactive else None
        self.asker = PromptSession[str]() if interactive else None  # its own history

    async def read(self, message: str, question: bool = False) -> str | None:
        """A line from the person, None at the end of input. Ctrl-C at a prompt raises
        KeyboardInterrupt: the terminal is raw then, so it is a key, not a signal."""
        prompt = self.asker if question else self.prompt
        if prompt is None:  # piped: no prompt, but a question is still shown
            if question:
                self.screen.line(message.rstrip())
            line = await asyncio.to_thread(sys.stdin.readline)
            return line.rstrip("\n") if line else None
        try:
            return await prompt.prompt_async([("bold", message)], handle_sigint=False)
        except EOFError:
            return None

    async def run(self, agent: str | None) -> int:
        """The exit status: 0 after /quit or the end of input."""
        if not await self.new_session(agent, first=True):
            return 2
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(signal.SIGINT, self.on_sigint)
        try:
            while True:
                try:
                    line = await self.read(f"{self.session.agent if self.session else ''}> ")
                except KeyboardInterrupt:
                    self.screen.line("(Ctrl-D or /quit exits)", "dim")
                    continue
                if line is None or self.client.state == "closed":
                    return 0 if line is None else 1  # on_state said why
                try:
                    code = await self.command(line.strip())
                except LINK_ERRORS as exc:
                    if self.client.state == "closed":
                        return 1
                    self.screen.line(self.why(exc), "red")
                    code = None
                if code is not None:
                    return code
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGINT)

    @staticmethod
    def why(exc: BaseException) -> str:
        if not isinstance(exc, ClientError) or exc.code != "session_end":
            return str(exc) or type(exc).__name__
        reason = ((exc.event or {}).get("metadata") or {}).get("reason")
        return f"The session has ended{f' ({reason})' if reason else ''}; /new starts another."

    async def command(self, line: str) -> int | None:
        """A slash command or a message; an exit status to stop."""
        name, _, arg = line.partition(" ")
        if not line.startswith("/"):
            return await self.turn(line) if line else None
        if name in ("/quit", "/exit"):
            return 0
        if name == "/help":
            self.screen.line(HELP)
        elif name == "/agents":
            for agent in await self.client.list_agents():
                mark = "*" if self.session and agent["name"] == self.session.agent else " "
                about = f"  {agent['description']}" if agent.get("description") else ""
                tools = ", ".join(agent.get("tools") or []) or "no tools"
                self.screen.line(f"{mark} {agent['name']}{about}  [{tools}]")
        elif name == "/new":
            await self.new_session(arg.strip() or (self.session and self.session.agent))
        else:
            self.screen.line(f"Unknown command {name}; /help lists them.", "yellow")
        return None

    async def new_session(self, agent: str | None, first: bool = False) -> bool:
        """Start a session (ending the one before); say which server, agent, session, model."""
        try:
            session = await self.client.create_session(agent)
        except LINK_ERRORS as exc:
            self.screen.line(f"Cannot start a session: {exc}", "red")  # names the agents
            return False
        old, self.session = self.session, session
        if old is not None and not old.ended:
            with contextlib.suppress(*LINK_ERRORS):
                await old.end()
        llm = session.info.get("llm") or {}
        model = "offline model" if llm.get("offline") else llm.get("model") or "model unknown"
        where = f"Connected to {self.client.url}" if first else "New session"
        self.screen.line(f"{where} · agent {session.agent} · session {session.id} · {model}")
        if first:
            self.screen.line("Ctrl-C cancels a turn, /help lists commands, /quit exits.", "dim")
        return True

    async def turn(self, text: str) -> None:
        """One turn, in a task that Ctrl-C can reach; raises what the turn raised."""
        self.interrupts, self.streamed = 0, False
        self.turn_task = task = asyncio.create_task(self.events(text))
        try:
            await asyncio.wait([task])
        finally:
            self.turn_task = None
            self.screen.end_answer()
        if task.cancelled():
            self.screen.line("Stopped waiting; the turn is cancelled.", "yellow")
        else:
            task.result()

    async def events(self, text: str) -> None:
        assert self.session is not None
        async for event in self.session.send(text):
            await self.show(event)

    async def show(self, event: dict[str, Any]) -> None:
        name, content, meta = event["event"], event.get("content"), event.get("metadata") or {}
        screen = self.screen
        if name == "agent.partial_answer":
            screen.answer(str(content or ""))
            self.streamed = True
        elif name == "agent.thinking":
            self.streamed = False
        elif name == "agent.tool_call":
            self.streamed = False
            call = call_text(str(meta.get("tool")), meta.get("args") or {})
            screen.line(clip(f"⚙ {call}", terminal_width()), "cyan")
        elif name == "agent.tool_result":
            status, time = meta.get("status"), took(meta.get("duration_ms"))
            if status == "rejected":
                screen.line(f"  ↳ not run: {meta.get('reason', 'rejected')}", "yellow")
            else:
                said = f"error: {content}" if status == "error" else str(content)
                said = clip(said, terminal_width() - 4 - len(time))
                screen.line(f"  ↳ {said}{time}", "red" if status == "error" else "dim")
        elif name == "agent.user_confirm":
            await self.confirm(event)
        elif name == "agent.final_answer":
            screen.end_answer() if self.streamed else screen.line(str(content or ""))
        elif name == "agent.interrupted":
            screen.line("cancelled" if self.interrupts else f"Interrupted: {content}", "yellow")
        elif name in ("agent.error", "agent.timeout"):
            screen.line(f"{'Error' if name == 'agent.error' else 'Timed out'}: {content}", "red")
        elif (
            name == "agent.session_resumed"
            and "replay_gap" in meta  # of this connection's re-attach, not another tab's
            and meta.get("connection_id") in (None, self.client.info.get("connection_id"))
        ):
            screen.line(f"Some events were lost while offline: {meta['replay_gap']}", "yellow")
        elif name == "system.notice":  # e.g. queued behind a turn another tab runs
            screen.line(str(content), "dim")
        elif name == "system.error":
            screen.line(f"Error: {content}", "red")

    async def confirm(self, event: dict[str, Any]) -> None:
        """agent.user_confirm: ask y/n (the client yields a question asked again after a
        reconnect only once, and sends an answer the link lost again by itself)."""
        assert self.session is not None
        step, meta = str(event.get("step_id")), event.get("metadata") or {}
        args = json.dumps(meta.get("args") or {}, ensure_ascii=False)
        reply = ""
        while reply not in ("y", "yes", "n", "no"):
            try:
                line = await self.read(f"Allow tool {meta.get('tool')} with {args}? [y/n] ", True)
            except KeyboardInterrupt:  # cancel the turn; the question is settled
                return self.on_sigint()
            reply = "n" if line is None else line.strip().lower()
        await self.session.respond(step, reply.startswith("y"))

    def on_sigint(self) -> None:
        """Ctrl-C: the first cancels the running turn (its agent.interrupted still shows),
        the second stops waiting for it. Without a turn it does nothing at a prompt (Ctrl-D
        or /quit exit); with piped input, whose read blocks a thread, it exits 130."""
        if self.turn_task is None or self.turn_task.done():
            if self.prompt is None:
                sys.stdout.flush()
                os._exit(130)
            return
        self.interrupts += 1
        if self.interrupts > 1:
            self.turn_task.cancel()
            return
        self.screen.line("cancelling… (Ctrl-C again stops waiting)", "dim")
        self.cancelling = asyncio.ensure_future(self._cancel())

    async def _cancel(self) -> None:
        assert self.session is not None
        with contextlib.suppress(*LINK_ERRORS):  # the turn's own events say what happened
            await self.session.cancel()

    def on_state(self, state: str) -> None:
        """The client's link changed: one line says so (the turn itself just waits)."""
        if state == "reconnecting":
            self.screen.line("reconnecting…", "dim")
        elif state == "connected" and self.link == "reconnecting":
            self.screen.line("reconnected", "dim")
        elif state == "closed" and self.client.error and self.client.error.code != "closed":
            self.screen.line(f"Connection lost: {self.client.error}", "red")
        self.link = state


async def chat(url: str, agent: str | None = None, token: str | None = None) -> int:
    """Connect, start a session, chat until /quit or the end of input; the exit status."""
    if "://" not in url:  # host:port
        url = f"ws://{url}"
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    screen = Screen(terminal=interactive)  # prompt_toolkit heeds NO_COLOR
    client = Client(url, token)
    talk = Chat(client, screen, interactive)
    # Our own output goes through Screen; this keeps any other print off the prompt line.
    with patch_stdout() if interactive else contextlib.nullcontext():
        try:
            await client.open()
        except (OSError, aiohttp.ClientError, ClientError, TimeoutError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
            if getattr(exc, "code", "") == "unauthorized":
                why = f"{exc} Give one with --token or MYAGENT_WS_TOKEN."
            screen.line(f"Cannot connect to {url}: {why}", "red")
            return 1
        try:
            return await talk.run(agent)
        finally:
            await client.close()


def main(url: str, agent: str | None = None, token: str | None = None) -> int:
    try:
        return asyncio.run(chat(url, agent, token))
    except KeyboardInterrupt:  # Ctrl-C before the chat took over the signal
        return 130
