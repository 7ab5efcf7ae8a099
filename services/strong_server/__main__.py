"""`python -m services.strong_server`: the embedded strong model on vLLM (COWEST_STRONG_*)."""

from services.strong_server.settings import StrongServerSettings
from shared.vllm_exec import exec_vllm

if __name__ == "__main__":
    exec_vllm(StrongServerSettings(), "strong")
