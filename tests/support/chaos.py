"""Chaos harness: the stack as real processes that a test may SIGKILL and restart, and a client load that
records what every request and feedback got, phase by phase, to compare with what reached Redis."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cowest.processes import ProcessTable, wait_until_ready
from cowest.stack import http_ok, settings_env
from services.orchestrator.config import OrchestratorSettings


@dataclass
class Part:
    """One process of the stack: how to start it and how to tell it is ready."""

    name: str
    start: Callable[[], object]
    probe: Callable[[], Awaitable[bool]]
    table: ProcessTable

    def kill(self) -> None:
        assert self.table.kill(self.name), f"{self.name} was not running"

    def ready(self, timeout: float = 240) -> float:
        """Wait until the probe answers; returns the seconds it took."""
        t0 = time.monotonic()
        asyncio.run(wait_until_ready(self.table, {self.name: self.probe}, timeout))
        return time.monotonic() - t0


@dataclass
class Outcome:
    phase: str
    started: float
    finished: float
    status: int | str  # the HTTP status, or the exception's name
    trace_id: str | None = None
    degraded: str | None = None
    code: str | None = None  # the error code of a failed request (OpenAI error object)
    feedback: int | str | None = None  # the last feedback attempt's status (202: accepted)

    @property
    def kind(self) -> str:
        if self.status != 200:
            return "failed"
        return "degraded" if self.degraded else "answered"


@dataclass
class ChaosLoad:
    """`clients` threads, each sending /v1/collaborate then, for every answer, one feedback with the question's
    reference answer (so the trainer runs collaborative feedback on it) and a score, retried (as a client that must
    deliver it would) until accepted or `feedback_deadline_s` has passed."""

    url: str
    domain: str = "general"
    clients: int = 2
    # A client's think time between requests. Without it a degraded answer (milliseconds) starts the next request at
    # once: ~20 requests/s, each feedback 5 model calls for the trainer, all competing with the vLLM being restarted.
    pause_s: float = 0.1
    feedback_deadline_s: float = 60.0
    phase: str = "baseline"
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)]
        self._lock = threading.Lock()

    def __enter__(self) -> ChaosLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.feedback_deadline_s + 60)

    def _run(self, client_no: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(self.pause_s if n else 0):
                n += 1
                out = Outcome(self.phase, time.monotonic(), 0.0, 0)
                try:
                    r = client.post(
                        f"{self.url}/v1/collaborate",
                        json={"question": f"chaos {client_no}.{n}: what is 2 + {n}?", "domain": self.domain},
                    )
                    out.status = r.status_code
                    if r.status_code == 200:
                        body = r.json()
                        out.trace_id, out.degraded = body["id"], body.get("degraded")
                    else:
                        with contextlib.suppress(ValueError, AttributeError):  # not an OpenAI error object
                            out.code = (r.json().get("error") or {}).get("code")
                except Exception as exc:  # noqa: BLE001 - every failure counts, none ends the load
                    out.status = type(exc).__name__
                    time.sleep(0.2)  # a refused connection fails at once: do not spin
                out.finished = time.monotonic()
                if out.trace_id:
                    out.feedback = self._feedback(client, out.trace_id, str(2 + n))
                with self._lock:
                    self.outcomes.append(out)

    def _feedback(self, client: httpx.Client, trace_id: str, reference: str) -> int | str:
        deadline = time.monotonic() + self.feedback_deadline_s
        body = {"id": trace_id, "score": 1.0, "correct_answer": reference, "source": "chaos"}
        status: int | str = "not sent"
        while time.monotonic() < deadline:
            try:
                r = client.post(f"{self.url}/v1/feedback", json=body)
                status = r.status_code
                if r.status_code in (202, 409):  # 409: an earlier attempt was stored but its answer was lost
                    return 202
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            time.sleep(0.5)
        return status

    def per_phase(self) -> dict[str, Counter]:
        table: dict[str, Counter] = {}
        for out in self.outcomes:
            table.setdefault(out.phase, Counter())[out.kind] += 1
        return table

    def reasons(self, phase: str) -> str:
        """Why requests of a phase were degraded or failed: `reason x count`, most common first."""
        why = Counter(
            str(o.degraded if o.kind == "degraded" else f"{o.status} {o.code or ''}".strip())
            for o in self.outcomes
            if o.phase == phase and o.kind != "answered"
        )
        return ", ".join(f"{reason} x{n}" for reason, n in why.most_common())


def write_table(rows: list[dict], path: Path | None) -> str:
    """A markdown table of the rows (same keys each), also written to `path` when given."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


def start_orchestrator(table: ProcessTable, settings: OrchestratorSettings, home: Path, *extra: str) -> str:
    """`python -m services.orchestrator.app` with these settings, passed as `cowest up` passes them (its endpoints,
    keys, spool, draft policy and port, and the `extra` fields named); returns its URL once it answers."""
    fields = ("endpoints", "admin_key", "spool_path", "draft_policy", "port", *extra)
    env = {"COWEST_HOME": str(home)} | settings_env(settings, *fields)
    table.start("orchestrator", [sys.executable, "-m", "services.orchestrator.app"], env)
    url = f"http://127.0.0.1:{settings.port}"
    asyncio.run(wait_until_ready(table, {"orchestrator": lambda: http_ok(f"{url}/healthz")}, 60))
    return url


def wait_for(check, deadline_s: float, what: str):
    """Poll `check()` every 0.5 s until it returns something other than None or False; that value."""
    end = time.monotonic() + deadline_s
    while (value := check()) is None or value is False:
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {deadline_s} s")
        time.sleep(0.5)
    return value
