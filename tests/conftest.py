"""Fixtures shared by the whole suite: a model cache, the tiny models, and real vLLM servers.

The model cache lives in COWEST_TEST_HOME (default: .cowest-test/ in the checkout) so that a
second run reuses the converted models; each test that writes to a cache gets its own tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cowest.models import pull_profile
from cowest.processes import ProcessTable, wait_until_ready
from services.weak_server.admin_client import VllmAdminClient
from services.weak_server.settings import StrongServerSettings, VllmServerSettings, WeakServerSettings
from shared.config import REPO_ROOT, CowestSettings

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach a model hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ADAPTERS = ("adapter-a", "adapter-b", "adapter-c")  # three fill every slot of --max-loras 3
TEST_HOME = Path(os.environ.get("COWEST_TEST_HOME", REPO_ROOT / ".cowest-test")).resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def cache_settings() -> CowestSettings:
    """Settings whose model cache is shared by the whole session (and later runs)."""
    return CowestSettings(home=TEST_HOME / "home")


@pytest.fixture(scope="session")
def tiny_models(cache_settings: CowestSettings) -> dict[str, Path]:
    results = pull_profile(cache_settings, "tiny")
    return {r.key: r.path for r in results}


@contextmanager
def running_vllm(server: VllmServerSettings, model_dir: Path, served_name: str, run_dir: Path,
                 dtype: str = "float32", timeout: float = 300) -> Iterator[str]:
    """A real `vllm serve` process for the duration of the block; yields its base URL."""
    table = ProcessTable(run_dir)
    name = f"vllm-{server.port}"
    table.start(name, server.argv(model_dir, served_name, dtype), server.env(), port=server.port)
    try:
        async def probe() -> bool:
            async with VllmAdminClient(server.base_url, timeout=5) as client:
                return await client.ready()

        asyncio.run(wait_until_ready(table, {name: probe}, timeout))
        yield server.base_url
    finally:
        outcome = table.stop(name, timeout=20)
        assert outcome in {"stopped", "killed", "not running"}


@pytest.fixture(scope="session")
def tiny_weak_server(tiny_models, tiny_adapters, tmp_path_factory) -> Iterator[str]:
    """The tiny weak model on real vLLM (fp32, LoRA on, plugin on) with ADAPTERS loaded; shared by
    every test module that needs a weak server, so the suite starts it once."""
    server = weak_server_settings()
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


def weak_server_settings(**overrides) -> WeakServerSettings:
    """Weak-server settings on a free port, as `cowest up` would launch them."""
    return WeakServerSettings(port=free_port(), **overrides)


def make_lora_adapter(base_dir: Path, out_dir: Path, seed: int, rank: int = 8) -> Path:
    """A peft LoRA adapter with random, non-zero lora_B (peft initialises B to zero = no-op adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_adapters(tiny_models: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_lora_adapter(tiny_models["tiny-weak"], root / name, seed=i + 1)
            for i, name in enumerate(ADAPTERS)}
