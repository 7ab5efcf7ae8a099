"""The weak replica's readiness check (services/weak_server/ready.py), run as the probes run it: the file alone,
by the system's Python in isolated mode (no project code, no venv: how the official GPU image runs it from a
ConfigMap), against real vLLM (the session's tiny weak server and its resolver directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.trainer.registry import DESIRED_DIR, AdapterRegistry
from services.weak_server import ready
from services.weak_server.admin_client import VllmAdminClient
from tests.support.memory import register_version
from tests.support.servers import make_lora_adapter

pytestmark = pytest.mark.slow
SYSTEM_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def probe(url: str, served: Path) -> subprocess.CompletedProcess:
    port = str(urlsplit(url).port)
    argv = [str(SYSTEM_PYTHON), "-I", ready.__file__, "--port", port, "--dir", str(served)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


async def test_a_replica_is_ready_only_once_it_holds_every_desired_version(
    tiny_weak_server, weak_resolver_dir, tiny_models, tmp_path
):
    assert ready.DESIRED_DIR == DESIRED_DIR  # the trainer writes where the check reads
    registry = AdapterRegistry(tmp_path / "adapters")
    trained = make_lora_adapter(tiny_models["tiny-weak"], tmp_path / "trained", seed=51)
    name = register_version(registry, trained, domain="joining", base_model_path=tiny_models["tiny-weak"])
    desired = weak_resolver_dir / DESIRED_DIR / "joining.json"
    try:
        assert probe(tiny_weak_server, weak_resolver_dir).returncode == 0  # nothing of this domain desired yet

        registry.publish_desired(weak_resolver_dir, "joining", [name])  # desired, not yet published
        run = probe(tiny_weak_server, weak_resolver_dir)
        assert run.returncode == 1 and f"{name} is desired but not published" in run.stderr

        registry.publish(name, weak_resolver_dir, str(tiny_models["tiny-weak"]))
        async with VllmAdminClient(tiny_weak_server) as admin:
            assert name not in {a.id for a in await admin.adapters()}  # the replica lacks it: not ready until...
            run = probe(tiny_weak_server, weak_resolver_dir)
            assert run.returncode == 0, run.stderr
            assert name in {a.id for a in await admin.adapters()}  # ...the check loaded it
            assert probe(tiny_weak_server, weak_resolver_dir).returncode == 0  # and stays ready
            await admin.unload_lora_adapter(name)
    finally:
        desired.unlink(missing_ok=True)


def test_a_server_that_does_not_answer_is_not_ready(tmp_path):
    run = probe("http://127.0.0.1:9", tmp_path)  # discard port: nothing listens
    assert run.returncode == 1 and "not ready: " in run.stderr
