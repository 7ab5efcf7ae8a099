"""Orchestrator fixtures: the app on real HTTP against the tiny vLLM servers and a private Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.orchestrator.app import create_app
from tests.support.servers import serve_app
from tests.support.settings import orch_settings


@pytest.fixture
def orchestrator(tiny_weak_server, tiny_strong_server, private_redis, tmp_path) -> Iterator[str]:
    settings = orch_settings(tiny_weak_server, tiny_strong_server, private_redis.url, tmp_path / "spool.jsonl")
    with serve_app(create_app(settings)) as url:
        yield url
