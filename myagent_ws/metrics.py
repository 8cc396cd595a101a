"""Prometheus metrics of one application, in its own registry (no process globals, so
tests and several apps in one process never share counters). Per-event counts are plain
dict increments read at scrape time (a prometheus_client Counter takes a lock per
increment: 2.5% of the server's CPU under load)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """What an operator graphs: connections, sessions, turns, events, errors, latency."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        connections: Callable[[], int],
        sessions: Callable[[], int],
        turns_running: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry()
        Gauge(
            "myagent_ws_turns_running", "Turns running in this process.", registry=self.registry
        ).set_function(turns_running)
        Gauge(
            "myagent_ws_connections", "Open WebSocket connections.", registry=self.registry
        ).set_function(connections)
        Gauge(
            "myagent_ws_sessions",
            "Live sessions (attached or waiting for a reconnect).",
            registry=self.registry,
        ).set_function(sessions)
        self._turns_started = Counter(
            "myagent_ws_turns_started", "Turns started.", registry=self.registry
        )
        self._turns_finished = Counter(
            "myagent_ws_turns_finished",
            "Turns finished, by terminal event.",
            ["outcome"],
            registry=self.registry,
        )
        self._outcomes: dict[str, Any] = {}
        self.events_sent: dict[str, int] = {}  # by event name
        self.tally(
            "myagent_ws_events_sent",
            "Session events emitted, by event name.",
            "event",
            self.events_sent,
        )
        self._inbound_errors = Counter(
            "myagent_ws_inbound_errors",
            "system.error replies, by code.",
            ["code"],
            registry=self.registry,
        )
        self._slow_clients = Counter(
            "myagent_ws_slow_clients_closed",
            "Connections closed with 4008 because the client fell behind.",
            registry=self.registry,
        )
        self._store_errors = Counter(
            "myagent_ws_store_errors",
            "Store failures that stopped a turn or lost its events.",
            registry=self.registry,
        )
        self._stream_lag = Histogram(
            "myagent_ws_stream_lag_seconds",
            "Redis store: from an event's append to this process reading it from the log "
            "(the oldest of each read).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._turn_seconds = Histogram(
            "myagent_ws_turn_seconds",
            "Turn duration, message to terminal event.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._first_event_seconds = Histogram(
            "myagent_ws_turn_first_event_seconds",
            "Time from a message to its turn's first event.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def event_sent(self, name: str) -> None:
        counts = self.events_sent
        counts[name] = counts.get(name, 0) + 1

    def inbound_error(self, code: str) -> None:
        self._inbound_errors.labels(code=code).inc()

    def slow_client_closed(self) -> None:
        self._slow_clients.inc()

    def store_error(self) -> None:
        self._store_errors.inc()

    def tally(self, name: str, documentation: str, label: str, counts: dict[str, int]) -> None:
        """Expose a dict of counts kept elsewhere (e.g. by the store) as a counter."""
        self.registry.register(_Tally(name, documentation, label, counts))

    def stream_lag(self, seconds: float) -> None:
        self._stream_lag.observe(seconds)

    def turn_started(self) -> None:
        self._turns_started.inc()

    def first_event(self, seconds: float) -> None:
        self._first_event_seconds.observe(seconds)

    def turn_finished(self, outcome: str, seconds: float) -> None:
        child = self._outcomes.get(outcome)
        if child is None:  # labels() is a lookup under a lock: bound once per outcome
            child = self._outcomes[outcome] = self._turns_finished.labels(outcome=outcome)
        child.inc()
        self._turn_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Tally:
    """A labelled counter kept in a plain dict, exposed at scrape time."""

    def __init__(self, name: str, documentation: str, label: str, counts: dict[str, int]):
        self.name, self.documentation, self.label, self.counts = name, documentation, label, counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.counts.items()):
            family.add_metric([value], count)
        yield family
