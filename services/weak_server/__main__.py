"""`python -m services.weak_server`: the weak vLLM server (COWEST_WEAK_*: LoRA on, runtime loading, resolver)."""

from services.weak_server.settings import WeakServerSettings
from shared.vllm_exec import exec_vllm

if __name__ == "__main__":
    exec_vllm(WeakServerSettings(), "weak")
