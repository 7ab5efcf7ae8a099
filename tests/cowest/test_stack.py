"""`cowest up / status / down` on the tiny profile with real processes, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from cowest.processes import group_members
from services.weak_server.admin_client import VllmAdminClient
from shared.config import REPO_ROOT
from tests.support.servers import free_port

pytestmark = pytest.mark.slow
COWEST = str(REPO_ROOT / ".venv" / "bin" / "cowest")


def cowest(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([COWEST, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def stack_env(tmp_path, tiny_models) -> dict[str, str]:
    """A private stack: own COWEST_HOME and free ports; the tiny models come from the session cache
    through the local-directory source."""
    return {
        "COWEST_HOME": str(tmp_path / "home"),
        "COWEST_LOCAL_MODELS_DIR": str(Path(tiny_models["tiny-weak"]).parent),
        "COWEST_WEAK_PORT": str(free_port()),
        "COWEST_STRONG_PORT": str(free_port()),
        "COWEST_ORCH_PORT": str(free_port()),
        "COWEST_TRAINER_PORT": str(free_port()),
        "COWEST_TRAINER_ADAPTERS_DIR": str(tmp_path / "adapters"),
        # Nothing listens here, so `up` must start (and `down` stop) a Redis of its own.
        "COWEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }


def status(env) -> dict[str, dict]:
    result = cowest(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    return {part["name"]: part for part in json.loads(result.stdout)}


def test_up_status_down(stack_env, tiny_adapters):
    up = cowest(stack_env, "up", "--profile", "tiny")
    assert up.returncode == 0, up.stderr
    assert "runs without client keys" in " ".join(up.stderr.split())  # an open door is said, not silent
    try:
        parts = status(stack_env)
        assert parts["redis"]["state"] == "healthy" and parts["redis"]["pid"]
        for role in ("weak", "strong"):
            assert parts[role]["state"] == "healthy", parts[role]
            assert parts[role]["model"] == f"tiny-{role}" and parts[role]["pid"]
            assert parts[role]["port"] == int(stack_env[f"COWEST_{role.upper()}_PORT"])
        assert redis.Redis.from_url(stack_env["COWEST_REDIS_URL"]).ping()
        assert parts["orchestrator"]["state"] == "healthy" and parts["trainer"]["state"] == "healthy"
        trainer = parts["trainer"]["url"]
        assert httpx.get(f"{trainer}/status").status_code == 401  # the trainer's API needs the admin key
        key = (Path(stack_env["COWEST_HOME"]) / "run" / "admin.key").read_text().strip()  # `up` made it, 0600
        assert httpx.get(f"{trainer}/status", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        answer = httpx.post(f"{parts['orchestrator']['url']}/v1/collaborate", json={"question": "hi"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["degraded"] is None
        trace_ids = [
            f["id"]
            for _, f in redis.Redis.from_url(stack_env["COWEST_REDIS_URL"], decode_responses=True).xrange(
                "cowest:traces"
            )
        ]
        assert answer.json()["id"] in trace_ids  # logged to the stack's own Redis

        # The weak server's /v1 (LoRA loading included) needs its key, which only the stack's services hold.
        assert httpx.get(f"{parts['weak']['url']}/v1/models", timeout=10).status_code == 401
        weak_key = (Path(stack_env["COWEST_HOME"]) / "run" / "weak-server.key").read_text().strip()

        async def load() -> None:
            async with VllmAdminClient(parts["weak"]["url"], api_key=weak_key) as admin:
                await admin.load_lora_adapter("demo-v1", str(tiny_adapters["adapter-a"]))

        asyncio.run(load())
        assert status(stack_env)["weak"]["adapters"] == ["demo-v1"]

        again = cowest(stack_env, "up", "--profile", "tiny")  # idempotent: nothing new to start
        assert again.returncode == 0 and "started nothing new" in again.stderr
        groups = [parts[n]["pid"] for n in ("redis", "weak", "strong", "orchestrator", "trainer")]
        assert all(group_members(g) for g in groups)
    finally:
        down = cowest(stack_env, "down")
    assert down.returncode == 0, down.stderr
    for part in ("trainer", "orchestrator", "weak", "strong", "redis"):
        assert f"{part}: stopped" in down.stdout
    assert [g for g in groups if group_members(g)] == [], "processes left behind after down"
    assert all(p["state"] == "down" for p in status(stack_env).values())
    assert not list((Path(stack_env["COWEST_HOME"]) / "run").glob("*.pid"))


def test_up_fails_with_the_server_log_and_stops_the_rest(stack_env):
    env = {**stack_env, "COWEST_WEAK_EXTRA_ARGS": '["--no-such-vllm-flag"]'}
    up = cowest(env, "up", "--profile", "tiny")
    assert up.returncode == 1
    assert "weak exited while starting" in up.stderr
    assert "no-such-vllm-flag" in up.stderr  # vLLM's own complaint, from the log tail
    assert "The stack was stopped" in up.stderr
    assert all(p["state"] == "down" for p in status(stack_env).values())
