"""The vLLM LoRA admin API contract the trainer relies on, through our typed client, on real vLLM."""

from __future__ import annotations

import pytest

from services.weak_server.admin_client import VllmAdminClient, VllmAdminError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_weak_server):
    return tiny_weak_server


async def test_load_lists_adapter_with_parent_then_unload(server, tiny_adapters):
    async with VllmAdminClient(server) as admin:
        assert await admin.ready()
        await admin.load_lora_adapter("contract-v1", str(tiny_adapters["adapter-a"]))
        cards = {c.id: c for c in await admin.models()}
        assert cards["contract-v1"].parent == "tiny-weak"
        assert cards["contract-v1"].is_adapter and not cards["tiny-weak"].is_adapter
        assert "contract-v1" in [a.id for a in await admin.adapters()]
        await admin.unload_lora_adapter("contract-v1")
        assert "contract-v1" not in [a.id for a in await admin.adapters()]


async def test_duplicate_name_is_400(server, tiny_adapters):
    async with VllmAdminClient(server) as admin:
        await admin.load_lora_adapter("dup-v1", str(tiny_adapters["adapter-a"]))
        with pytest.raises(VllmAdminError) as err:
            await admin.load_lora_adapter("dup-v1", str(tiny_adapters["adapter-b"]))
        assert err.value.status_code == 400
        assert "dup-v1" in err.value.message
        await admin.unload_lora_adapter("dup-v1")


async def test_bad_path_is_404_and_server_keeps_serving(server, tmp_path):
    async with VllmAdminClient(server) as admin:
        with pytest.raises(VllmAdminError) as err:
            await admin.load_lora_adapter("missing-v1", str(tmp_path / "no-such-adapter"))
        assert err.value.status_code == 404
        assert "missing-v1" not in {c.id for c in await admin.models()}
        assert await admin.ready()


async def test_unload_unknown_is_404(server):
    async with VllmAdminClient(server) as admin:
        with pytest.raises(VllmAdminError) as err:
            await admin.unload_lora_adapter("never-loaded")
        assert err.value.status_code == 404


async def test_health_is_false_when_nothing_listens():
    from tests.support.servers import free_port

    async with VllmAdminClient(f"http://127.0.0.1:{free_port()}", timeout=2) as admin:
        assert await admin.health() is False
        assert await admin.ready() is False
