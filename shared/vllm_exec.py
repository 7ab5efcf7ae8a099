"""Replace this process with `vllm serve` for one role, from its settings: how a model-server container starts
(`python -m services.weak_server`, `python -m services.strong_server`). The model comes from COWEST_HOME's cache
(`cowest models pull`), its served name from COWEST_WEAK_MODEL / COWEST_STRONG_MODEL (the profile's by default),
the dtype from the catalog and the CPU features read now (shared/cpu.py); the weak server's key is
COWEST_WEAK_API_KEY, which the trainer and the orchestrator send."""

from __future__ import annotations

import os

from shared.catalog import get_model
from shared.config import CowestSettings, Endpoints
from shared.vllm_launch import VllmServerSettings


def exec_vllm(server: VllmServerSettings, role: str) -> None:
    endpoints = Endpoints()
    served = endpoints.weak_model if role == "weak" else endpoints.strong_model
    argv = server.argv(CowestSettings().models_dir / served, served, get_model(served).vllm_dtype)
    os.execvpe(argv[0], argv, {**os.environ, **server.env()})
