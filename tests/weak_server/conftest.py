"""LoRA adapters made with peft on the tiny weak model, and their transformers+peft greedy reference."""

from __future__ import annotations

from pathlib import Path

import pytest

ADAPTERS = ("adapter-a", "adapter-b", "adapter-c")  # three fill every slot of --max-loras 3
PROMPTS = ("The quick brown fox", "def parse(path):", "Return the JSON object", "A logger records events")
N_TOKENS = 12


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
        return seq[0, len(ids):].tolist()

    reference = {}
    for i, ids in enumerate(prompt_ids):
        with model.disable_adapter():
            reference[("tiny-weak", i)] = greedy(ids)
        for name in ADAPTERS:
            model.set_adapter(name)
            reference[(name, i)] = greedy(ids)
    return reference
