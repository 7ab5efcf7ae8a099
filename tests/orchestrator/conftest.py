"""Orchestrator test fixtures: the app on real HTTP (uvicorn in a thread), a private Redis, and a
scripted fake OpenAI-compatible upstream for the fault tests (429s, 500s, hangs)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from cowest.processes import ProcessTable
from cowest.redis_server import start_redis
from services.orchestrator.app import create_app
from services.orchestrator.config import OrchestratorSettings
from shared.config import CowestSettings
from tests.conftest import free_port


@contextmanager
def serve_app(app) -> Iterator[str]:
    """Serve an ASGI app over real HTTP on a free loopback port for the duration of the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)


class RedisProcess:
    """A redis-server of the test's own (append-only persistence), which the test may stop and restart."""

    def __init__(self, home: Path):
        self.url = f"redis://127.0.0.1:{free_port()}/0"
        self.settings = CowestSettings(home=home, redis_url=self.url)
        self.table = ProcessTable(home / "run")

    def start(self) -> None:
        start_redis(self.settings, self.table)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.table.stop("redis", timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_redis(tmp_path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis")
    proc.start()
    yield proc
    proc.stop()


def orch_settings(weak_url: str, strong_url: str, redis_url: str, spool: Path, **overrides) -> OrchestratorSettings:
    defaults = dict(weak_url=f"{weak_url}/v1", weak_model="tiny-weak", strong_url=f"{strong_url}/v1",
                    strong_model="tiny-strong", redis_url=redis_url, spool_path=spool,
                    weak_max_tokens=8, strong_max_tokens=8, retry_max_wait_s=3.0,
                    draft_policy="always")  # these tests exercise the draft on domains without an adapter
    return OrchestratorSettings(**{**defaults, **overrides})


@pytest.fixture
def orchestrator(tiny_weak_server, tiny_strong_server, private_redis, tmp_path) -> Iterator[str]:
    settings = orch_settings(tiny_weak_server, tiny_strong_server, private_redis.url, tmp_path / "spool.jsonl")
    with serve_app(create_app(settings)) as url:
        yield url


class FakeUpstream:
    """A scripted OpenAI-compatible server. `script` lists what each chat call does, the last entry
    repeating: "ok", "429" (Retry-After: 1), "500", "hang"."""

    def __init__(self, model: str, script: list[str], text: str = "fake answer", extra_models: tuple[str, ...] = ()):
        self.model, self.script, self.text, self.extra_models = model, list(script), text, extra_models
        self.calls: list[dict] = []
        self.app = FastAPI()
        self.app.add_api_route("/v1/models", self._models, methods=["GET"])
        self.app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])

    async def _models(self):
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in (self.model, *self.extra_models)]}

    async def _chat(self, request: Request):
        body = await request.json()
        action = self.script[min(len(self.calls), len(self.script) - 1)]
        self.calls.append({"t": time.monotonic(), "action": action, "body": body, "headers": dict(request.headers)})
        if action == "429":
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit_error"}}, 429,
                                headers={"Retry-After": "1"})
        if action == "500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if action == "hang":
            await asyncio.sleep(60)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if body.get("stream"):
            async def events():
                for word in self.text.split():
                    yield {"data": json.dumps({"choices": [{"index": 0, "delta": {"content": word + " "}}]})}
                yield {"data": json.dumps({"choices": [], "usage": usage})}
                yield {"data": "[DONE]"}
            return EventSourceResponse(events())
        return {"id": "x", "object": "chat.completion", "model": self.model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.text}}]}


@contextmanager
def fake_upstream(model: str, script: list[str], text: str = "fake answer",
                  extra_models: tuple[str, ...] = ()) -> Iterator[tuple[str, FakeUpstream]]:
    fake = FakeUpstream(model, script, text, extra_models)
    with serve_app(fake.app) as url:
        yield url, fake
