"""Fixtures shared by the whole suite: a model cache, the tiny models, real vLLM servers and private Redis.
The helpers behind them live in tests/support/.

The model cache lives in COWEST_TEST_HOME (default: .cowest-test/ in the checkout) so that a
second run reuses the converted models; each test that writes to a cache gets its own tmp dir.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from cowest.provision import pull_profile
from services.strong_server.settings import StrongServerSettings
from services.weak_server.admin_client import VllmAdminClient
from shared.config import CowestSettings
from tests.support.metrics import scored_by_length
from tests.support.redis import RedisProcess
from tests.support.servers import ADAPTERS, TEST_HOME, free_port, make_lora_adapter, running_vllm, weak_server_settings

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach a model hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def cache_settings() -> CowestSettings:
    """Settings whose model cache is shared by the whole session (and later runs)."""
    return CowestSettings(home=TEST_HOME / "home")


@pytest.fixture(scope="session")
def tiny_models(cache_settings: CowestSettings) -> dict[str, Path]:
    results = pull_profile(cache_settings, "tiny")
    return {r.key: r.path for r in results}


@pytest.fixture(scope="session")
def weak_resolver_dir(tmp_path_factory) -> Path:
    """The session weak server's VLLM_LORA_RESOLVER_CACHE_DIR: adapters published here are served by name."""
    return tmp_path_factory.mktemp("served-adapters")


@pytest.fixture(scope="session")
def tiny_weak_server(tiny_models, tiny_adapters, weak_resolver_dir, tmp_path_factory) -> Iterator[str]:
    """The tiny weak model on real vLLM (fp32, LoRA on, plugin on, filesystem resolver on) with ADAPTERS loaded;
    shared by every test module that needs a weak server, so the suite starts it once."""
    server = weak_server_settings(lora_resolver_dir=weak_resolver_dir)
    with running_vllm(server, tiny_models["tiny-weak"], "tiny-weak", tmp_path_factory.mktemp("run-weak")) as url:

        async def load() -> None:
            async with VllmAdminClient(url) as admin:
                for name in ADAPTERS:
                    await admin.load_lora_adapter(name, str(tiny_adapters[name]))

        asyncio.run(load())
        yield url


@pytest.fixture(scope="session")
def tiny_strong_server(tiny_models, tmp_path_factory) -> Iterator[str]:
    server = StrongServerSettings(port=free_port())
    with running_vllm(server, tiny_models["tiny-strong"], "tiny-strong", tmp_path_factory.mktemp("run-strong")) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_adapters(tiny_models: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: make_lora_adapter(tiny_models["tiny-weak"], root / name, seed=i + 1) for i, name in enumerate(ADAPTERS)
    }


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


@pytest.fixture
def length_metric():
    """`length_metric(domain)`: the trainer in this process scores `domain` by answer length until the test ends
    (tiny models' drafts then always differ in score, so pairs exist)."""
    with ExitStack() as stack:
        yield lambda domain: stack.enter_context(scored_by_length(domain))
