"""Every limit and default of the server in one place, so each has one name and one value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    """Server settings; the CLI fills them from flags and tests build them directly."""

    host: str = "localhost"
    port: int = 8080
    # Serve /health, /ready and /metrics on this port too (e.g. for a private network).
    health_port: int | None = None
    debug: bool = False

    # LLM: with neither a base URL nor an API key the built-in offline model serves.
    model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_timeout_s: float = 60.0

    # Inbound frames larger than this get message_too_large; the connection stays open.
    max_frame_bytes: int = 1 << 20
    # Frames past this many times max_frame_bytes make aiohttp close the socket (1009).
    frame_ceiling_factor: int = 8
    # Outbound frames waiting for one slow client; past this the client is disconnected
    # (its sessions live on, and a reconnect replays what it missed).
    send_queue_size: int = 1024

    max_sessions_per_connection: int = 16
    # A session with no connection attached is kept this long for a reconnect.
    session_ttl_s: float = 300.0
    reap_interval_s: float = 5.0
    # Events kept per session for replay after a reconnect.
    replay_buffer: int = 1000

    turn_timeout_s: float = 300.0
    # Application-level system.heartbeat interval; 0 disables it.
    heartbeat_s: float = 30.0
    # WebSocket ping interval that detects dead peers.
    ws_ping_s: float = 20.0
    shutdown_timeout_s: float = 5.0
