"""Every limit and default of the server in one place, so each has one name and one value.

Each field is also a `myagent-ws server --field-name` option and a `MYAGENT_WS_FIELD_NAME`
environment variable (generated from this dataclass by the CLI; the flag wins). The
comment above a field is its help text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Settings:
    """Server settings; the CLI fills them from flags and the environment, tests build
    them directly."""

    # Interface to listen on.
    host: str = "localhost"
    # Port to listen on.
    port: int = 8080
    # Also serve /health, /ready and /metrics on this port (e.g. for a private network).
    health_port: int | None = None
    # Tracebacks on errors; log every frame in and out.
    debug: bool = False
    # For development: watch the agent files and the local modules they import, and
    # reload the agents after an edit (their open sessions end with reason "reloaded").
    reload: bool = False

    # LLM model name (also MYAGENT_MODEL); with neither a base URL nor an API key the
    # built-in offline model serves.
    model: str | None = None
    # OpenAI-compatible endpoint (also OPENAI_BASE_URL).
    llm_base_url: str | None = None
    # API key for the endpoint (also OPENAI_API_KEY).
    llm_api_key: str | None = None
    # Seconds one LLM request may take.
    llm_timeout_s: float = 60.0

    # Inbound frames larger than this get message_too_large; the connection stays open.
    max_frame_bytes: int = 1 << 20
    # Frames past this many times max_frame_bytes make aiohttp close the socket (1009).
    frame_ceiling_factor: int = 8
    # Inbound frames per second per connection (acks exempt); more get rate_limited.
    rate_limit_per_s: float = 20.0
    # Frames a connection may send at once before rate_limit_per_s applies.
    rate_limit_burst: int = 60
    # Bytes one connection may owe (written by sessions, not yet taken by the client);
    # past it the session's turn waits for the client, and at twice it, or after
    # send_timeout_s of waiting, the connection is closed with 4008 (sessions stay resumable).
    send_buffer_bytes: int = 1 << 20
    # Seconds a turn waits for a connection that fell behind before closing it with 4008.
    send_timeout_s: float = 5.0
    # String content longer than this (UTF-8 bytes) is cut for the wire, with
    # metadata.truncated; the agent keeps the full text.
    max_event_bytes: int = 256 << 10

    # Sessions per process; more get too_many_sessions.
    max_sessions: int = 10_000
    # Sessions per connection; more get too_many_sessions.
    max_sessions_per_connection: int = 16
    # Seconds a session with no connection attached waits for user.reconnect.
    session_ttl_s: float = 300.0
    # Seconds an attached session may go without a message before it is ended.
    session_idle_ttl_s: float = 3600.0
    # Seconds between sweeps for expired sessions.
    reap_interval_s: float = 5.0
    # Events kept per session for replay after a reconnect.
    replay_buffer: int = 1000
    # Bytes of events kept per session for replay after a reconnect.
    replay_buffer_bytes: int = 1 << 20
    # Whole turns of conversation memory kept per session (the system prompt always is).
    max_history_turns: int = 50

    # Seconds a turn may run before it ends with agent.timeout (time spent waiting for a
    # person's approval does not count).
    turn_timeout_s: float = 300.0
    # Seconds a tool call waits for approval (agent.user_confirm, answered by
    # user.response) before it counts as rejected, with metadata.reason "timeout".
    confirm_timeout_s: float = 300.0
    # A user.message while its session's turn runs: reject (session_busy), queue (it runs
    # after; at most max_queued_messages wait), or interrupt (the running turn ends with
    # agent.interrupted, then it runs).
    on_busy: Literal["reject", "queue", "interrupt"] = "reject"
    # Messages one session may have waiting with on_busy=queue; more get session_busy.
    max_queued_messages: int = 8
    # Seconds between system.heartbeat events; 0 disables them.
    heartbeat_s: float = 30.0
    # Seconds between WebSocket pings that detect dead peers; 0 disables them.
    ws_ping_s: float = 20.0
    # Event loop: auto (uvloop when the myagent-ws[uvloop] extra is installed), asyncio,
    # or uvloop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Accept permessage-deflate when a client offers it (browsers do). Off: measured +55%
    # server CPU per event, and each connection then holds ~300 KB of zlib state.
    ws_compression: bool = False
    # Where sessions live: memory (this process only), or redis://HOST:PORT/DB to share
    # sessions, their event logs and their turns between server processes.
    store: str = "memory"
    # Prefix of every Redis key, so several deployments can share one Redis.
    store_prefix: str = "myagent-ws:"
    # Seconds after a server process stops renewing its lease (it died, or lost Redis) by
    # which another process ends its running turns with agent.error node_lost.
    node_lease_s: float = 10.0
    # A token that may connect, one principal each (repeatable; the environment variable is
    # comma-separated). With none here, in auth_tokens_file or from an authenticate plugin,
    # auth is off: anyone who reaches the port may connect.
    auth_tokens: tuple[str, ...] = ()
    # A file of name:token lines, one principal each (blank lines and # comments skipped).
    auth_tokens_file: str | None = None
    # Seconds a ticket from POST /auth/ticket stays valid for its one connection.
    auth_ticket_ttl_s: float = 30.0
    # Failed authentications one client IP may make per minute; past it every attempt from
    # it gets HTTP 429 with Retry-After until it is below again.
    max_auth_failures_per_ip: int = 10
    # A browser origin (scheme://host[:port]) allowed to open WebSockets and fetch tickets
    # besides the server's own (repeatable; the environment variable is comma-separated;
    # * allows any). None given: http(s)://localhost, 127.0.0.1 and [::1] on any port.
    allowed_origins: tuple[str, ...] = ()
    # Open WebSocket connections one client IP may hold in this process; more get HTTP 429.
    # 0: no limit.
    max_connections_per_ip: int = 256
    # A proxy address whose X-Forwarded-For header names the client, for the per-IP limits
    # (repeatable; the environment variable is comma-separated; * trusts any).
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    # Seconds a new TCP connection has to send a whole HTTP request (and an idle
    # keep-alive connection stays open), so half-open handshakes cannot pile up.
    handshake_timeout_s: float = 10.0
    # Seconds shutdown waits to flush each connection.
    shutdown_timeout_s: float = 5.0
    # Seconds running turns get to finish after SIGTERM or a first Ctrl-C, while new
    # sessions are refused; then they are interrupted. A second signal skips the wait.
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(
                f"event_loop must be auto, asyncio or uvloop, not {self.event_loop!r}."
            )
        if self.on_busy not in ("reject", "queue", "interrupt"):
            raise ValueError(f"on_busy must be reject, queue or interrupt, not {self.on_busy!r}.")
        if self.store != "memory" and not self.store.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"store must be memory or a redis:// URL (redis://HOST:PORT/DB), "
                f"not {self.store!r}."
            )
        for proxy in self.forwarded_allow_ips:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips: {proxy!r} is not an IP address or network "
                        "(such as 10.0.0.0/8), nor *."
                    ) from None
        for origin in self.allowed_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s]+/?", origin):
                raise ValueError(
                    f"allowed_origins: {origin!r} is not an origin such as "
                    "https://app.example.com or http://localhost:3000 (scheme, host, port), "
                    "nor *."
                )
        if self.max_connections_per_ip < 0:
            raise ValueError(
                f"max_connections_per_ip must be 0 (no limit) or more, "
                f"not {self.max_connections_per_ip!r}."
            )
        if self.replay_buffer_bytes < self.max_event_bytes:
            raise ValueError(
                f"replay_buffer_bytes ({self.replay_buffer_bytes}) must be at least "
                f"max_event_bytes ({self.max_event_bytes}), or one event could not be replayed."
            )
        for name in (
            "rate_limit_per_s",
            "rate_limit_burst",
            "send_buffer_bytes",
            "max_event_bytes",
            "max_sessions",
            "replay_buffer",
            "max_history_turns",
            "max_queued_messages",
            "confirm_timeout_s",
            "node_lease_s",
            "auth_ticket_ttl_s",
            "max_auth_failures_per_ip",
            "handshake_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}.")
