"""The `tiny` profile: a small random Llama and a locally trained tokenizer, built in seconds.

It exists for tests: real vLLM serves it exactly like the real models (chat template, LoRA),
but it loads in seconds and never needs a download. Its outputs are gibberish by design.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from shared.catalog import ModelSpec

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Stdlib docstrings: real English text that every Python has, so the tokenizer needs no download.
CORPUS_MODULES = ["argparse", "collections", "json", "logging", "pathlib", "re", "subprocess", "typing"]


def _corpus() -> list[str]:
    import importlib

    texts = []
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            if doc:
                texts.append(doc)
    return texts


def build_tiny_model(spec: ModelSpec, out_dir: Path, vocab_size: int = 1024) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=spec.eos_token, pad_token="<|endoftext|>", chat_template=CHATML
    )
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}

    # head_dim >= 32 is required by vLLM's CPU attention backend; initializer_range=0.3 makes
    # logits peaked enough that greedy decoding does not flip between batch shapes.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids[spec.eos_token],
        pad_token_id=ids["<|endoftext|>"],
        dtype="float32",
    )
    torch.manual_seed(spec.tiny_seed or 0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = ids[spec.eos_token]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
