"""Typed async client for a vLLM server's admin surface: LoRA load/unload, /v1/models, /health, and the greedy
log-probs that show whether an adapter changes the model.

The trainer uses it to hot-swap adapters; `cowest status` uses it to report loaded adapters.
Errors come back as `VllmAdminError` carrying the HTTP status and vLLM's message
(duplicate name -> 400, missing adapter path -> 404, unloading an unknown name -> 404).
"""

from __future__ import annotations

from types import TracebackType

import httpx
from pydantic import BaseModel


class ServedModel(BaseModel):
    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    root: str | None = None
    parent: str | None = None  # set for LoRA adapters: the base model's served name
    max_model_len: int | None = None

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None


class VllmAdminError(RuntimeError):
    def __init__(self, status_code: int, message: str):
        super().__init__(f"vLLM answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message


class VllmAdminClient:
    def __init__(
        self, base_url: str, timeout: float = 30.0, client: httpx.AsyncClient | None = None, api_key: str | None = None
    ):
        self._owns_client = client is None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)

    async def __aenter__(self) -> VllmAdminClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def health(self) -> bool:
        """True when the engine answers /health with 200; False when down or starting."""
        try:
            return (await self._client.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    async def ready(self) -> bool:
        """Healthy and serving: /health answers 200 and /v1/models lists the base model."""
        if not await self.health():
            return False
        try:
            return bool(await self.models())
        except (httpx.HTTPError, VllmAdminError):
            return False

    async def models(self) -> list[ServedModel]:
        data = self._checked(await self._client.get("/v1/models")).json()
        return [ServedModel.model_validate(card) for card in data["data"]]

    async def adapters(self) -> list[ServedModel]:
        return [card for card in await self.models() if card.is_adapter]

    async def load_lora_adapter(self, name: str, path: str) -> None:
        """Load an adapter under a new name. Never reuse a name: vLLM keys its prefix cache by name."""
        self._checked(await self._client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}))

    async def greedy_logprobs(self, model: str, messages: list[dict], max_tokens: int = 8) -> list[float]:
        """The log-probs of a short greedy completion by `model` (the base model's name or an adapter's)."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "logprobs": True}
        data = self._checked(await self._client.post("/v1/chat/completions", json=body)).json()
        return [t["logprob"] for t in data["choices"][0]["logprobs"]["content"]]

    async def unload_lora_adapter(self, name: str) -> None:
        self._checked(await self._client.post("/v1/unload_lora_adapter", json={"lora_name": name}))

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            body = response.json()
            err = body.get("error", body)  # {"error": {...}} (current) or a flat error object
            message = err.get("message", response.text) if isinstance(err, dict) else str(err)
        except ValueError:
            message = response.text
        raise VllmAdminError(response.status_code, message)
