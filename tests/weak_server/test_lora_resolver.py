"""vLLM's filesystem LoRA resolver on the weak server: a version the trainer published (registry.publish) is
served by name at its first request, never loaded through the admin API — how a replica started after a swap
serves the active version. Real vLLM (the session's tiny weak server, resolver dir on)."""

from __future__ import annotations

import httpx
import pytest

from services.trainer.registry import AdapterRegistry
from services.weak_server.admin_client import VllmAdminClient
from tests.support.memory import register_version
from tests.support.servers import make_lora_adapter

pytestmark = pytest.mark.slow

PROMPT = [{"role": "user", "content": "Name a colour."}]


async def test_a_published_version_is_served_at_its_first_request(
    tiny_weak_server, weak_resolver_dir, tiny_models, tmp_path
):
    registry = AdapterRegistry(tmp_path / "adapters")
    trained = make_lora_adapter(tiny_models["tiny-weak"], tmp_path / "trained", seed=41)
    name = register_version(registry, trained, domain="resolved", base_model_path=tiny_models["tiny-weak"])
    async with VllmAdminClient(tiny_weak_server) as admin:
        assert name not in {a.id for a in await admin.adapters()}
        async with httpx.AsyncClient(base_url=tiny_weak_server, timeout=120) as client:
            body = {"model": name, "messages": PROMPT, "max_tokens": 4}
            unpublished = await client.post("/v1/chat/completions", json=body)
            assert unpublished.status_code == 404  # nothing to resolve yet: an error, not the base model
            registry.publish(name, weak_resolver_dir, str(tiny_models["tiny-weak"]))  # `vllm serve`'s model
            first = await client.post("/v1/chat/completions", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["model"] == name
        try:
            base, tuned = (
                await admin.greedy_logprobs("tiny-weak", PROMPT),
                await admin.greedy_logprobs(name, PROMPT),
            )
            assert max(abs(a - b) for a, b in zip(base, tuned, strict=False)) > 1e-6  # the adapter is applied
        finally:
            await admin.unload_lora_adapter(name)
