"""Prompts and the transformers+peft greedy reference for the LoRA parity tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import ADAPTERS
from tests.weak_server.parity import N_TOKENS, PROMPTS


@pytest.fixture(scope="session")
def prompt_ids(tiny_models: dict[str, Path]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["tiny-weak"])
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="session")
def greedy_reference(tiny_models, tiny_adapters, prompt_ids) -> dict[tuple[str, int], list[int]]:
    """{(model or adapter name, prompt index): N_TOKENS greedy token ids} from transformers+peft, fp32.

    Greedy by hand (argmax of a full forward pass per step, EOS not special) to match vLLM's
    `ignore_eos` decoding token for token.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models["tiny-weak"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tiny_adapters[ADAPTERS[0]], adapter_name=ADAPTERS[0])
    for name in ADAPTERS[1:]:
        model.load_adapter(tiny_adapters[name], adapter_name=name)
    model.eval()

    def greedy(ids: list[int]) -> list[int]:
        seq = torch.tensor([ids])
        with torch.no_grad():
            for _ in range(N_TOKENS):
                nxt = model(input_ids=seq).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
        return seq[0, len(ids) :].tolist()

    reference = {}
    for i, ids in enumerate(prompt_ids):
        with model.disable_adapter():
            reference[("tiny-weak", i)] = greedy(ids)
        for name in ADAPTERS:
            model.set_adapter(name)
            reference[(name, i)] = greedy(ids)
    return reference
