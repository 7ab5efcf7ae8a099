"""Real servers for tests: any ASGI app on real HTTP, and `vllm serve` processes (the tiny models)."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from cowest.processes import ProcessTable, wait_until_ready
from services.weak_server.admin_client import VllmAdminClient
from services.weak_server.settings import WeakServerSettings
from shared.config import REPO_ROOT
from shared.vllm_launch import VllmServerSettings

# The model cache of the suite (and later runs): COWEST_TEST_HOME, default .cowest-test/ in the checkout.
TEST_HOME = Path(os.environ.get("COWEST_TEST_HOME", REPO_ROOT / ".cowest-test")).resolve()
ADAPTERS = ("adapter-a", "adapter-b", "adapter-c")  # three fill every slot of --max-loras 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_app(app) -> Iterator[str]:
    """Serve an ASGI app over real HTTP on a free loopback port for the duration of the block. A server that
    does not stop within 20 s is an error, reported with the stacks of its event loop's tasks (left running, it
    would keep its loops, and their load, for the rest of the session)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", timeout_graceful_shutdown=1)
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)
        if thread.is_alive():
            stacks = io.StringIO()
            for task in asyncio.all_tasks(loop):
                task.print_stack(file=stacks)
            raise RuntimeError(f"the test server did not stop within 20 s; its tasks:\n{stacks.getvalue()}")
        loop.close()


class VllmProcess:
    """A real `vllm serve` process that a test starts, can SIGKILL and start again on the same port."""

    def __init__(
        self, server: VllmServerSettings, model_dir: Path, served_name: str, run_dir: Path, dtype: str = "float32"
    ):
        self.server, self.table, self.name = server, ProcessTable(run_dir), f"vllm-{server.port}"
        self.argv = server.argv(model_dir, served_name, dtype)

    @property
    def url(self) -> str:
        return self.server.base_url

    def start(self, timeout: float = 300) -> str:
        """Start and wait until it serves (a blocking call: from async code, through asyncio.to_thread)."""
        self.table.start(self.name, self.argv, self.server.env(), port=self.server.port)

        async def probe() -> bool:
            async with VllmAdminClient(self.url, timeout=5) as client:
                return await client.ready()

        asyncio.run(wait_until_ready(self.table, {self.name: probe}, timeout))
        return self.url

    def kill(self) -> None:
        self.table.kill(self.name)

    def stop(self) -> None:
        assert self.table.stop(self.name, timeout=20) in {"stopped", "killed", "not running"}


@contextmanager
def running_vllm(
    server: VllmServerSettings,
    model_dir: Path,
    served_name: str,
    run_dir: Path,
    dtype: str = "float32",
    timeout: float = 300,
) -> Iterator[str]:
    """A real `vllm serve` process for the duration of the block; yields its base URL."""
    process = VllmProcess(server, model_dir, served_name, run_dir, dtype)
    try:
        yield process.start(timeout)
    finally:
        process.stop()


def weak_server_settings(**overrides) -> WeakServerSettings:
    """Weak-server settings on a free port, as `cowest up` would launch them (no resolver dir unless given: the
    default lies in the user's COWEST_HOME)."""
    return WeakServerSettings(port=free_port(), **{"lora_resolver_dir": None, **overrides})


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
EVERY_LINEAR = (*ATTENTION, "gate_proj", "up_proj", "down_proj")  # what the SFT adapters train


def make_lora_adapter(
    base_dir: Path, out_dir: Path, seed: int, rank: int = 8, targets: tuple[str, ...] = ATTENTION
) -> Path:
    """A peft LoRA adapter with random, non-zero lora_B (peft initialises B to zero = no-op adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets))
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(out_dir)
    return out_dir
