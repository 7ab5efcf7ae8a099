"""Prometheus metrics of the orchestrator (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300)


class Metrics:
    """One registry per app instance, so tests can build several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cowest_requests",
            "Requests by route, domain and status",
            ["route", "domain", "status"],
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "cowest_stage_latency_seconds",
            "Latency per stage (weak, strong, total)",
            ["stage", "domain"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.degraded = Counter(
            "cowest_degraded",
            "Answers given in a degraded mode, by reason",
            ["domain", "reason"],
            registry=self.registry,
        )
        self.active_adapter = Gauge(
            "cowest_active_adapter_info",
            "The active adapter version of each domain (1)",
            ["domain", "adapter"],
            registry=self.registry,
        )
        self.draft_adapter = Counter(
            "cowest_draft_adapter_requests",
            "Drafts by the adapter version that wrote them (how a canary splits a domain's traffic)",
            ["domain", "adapter"],
            registry=self.registry,
        )
        self.log_spool_bytes = Gauge(
            "cowest_log_spool_bytes",
            "Size of the local spool (alert well before COWEST_ORCH_MAX_SPOOL_BYTES)",
            registry=self.registry,
        )
        self.log_dropped = Gauge(
            "cowest_log_dropped",
            "Log records lost since start: spool full or unwritable (alert on any)",
            registry=self.registry,
        )
        self.log_rejected = Gauge(
            "cowest_log_rejected",
            "Spooled records Redis refused for good (kept in <spool>.rejected)",
            registry=self.registry,
        )
        self.log_backlog = Gauge(
            "cowest_log_backlog", "Log records waiting in the local spool for Redis", registry=self.registry
        )
        self.alias_missed = Gauge(
            "cowest_alias_missed_notifications",
            "Adapter alias changes that reached this process by a periodic re-read, not a notification",
            registry=self.registry,
        )
        self._adapters: dict[str, str] = {}

    def set_active_adapter(self, domain: str, adapter: str | None) -> None:
        if (old := self._adapters.pop(domain, None)) is not None:
            self.active_adapter.remove(domain, old)
        if adapter:
            self._adapters[domain] = adapter
            self.active_adapter.labels(domain, adapter).set(1)
