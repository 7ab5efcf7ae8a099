"""The weak vLLM replicas the trainer keeps in step: a fixed list of server roots (COWEST_TRAINER_WEAK_REPLICAS)
or the addresses a DNS name resolves to (COWEST_TRAINER_WEAK_REPLICAS_DNS=host:port: a Kubernetes headless
Service lists one address per ready pod). The set is re-read at every use, so a replica that joins, restarts
or leaves is seen at the next swap or reconcile pass."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from services.weak_server.admin_client import ServedModel, VllmAdminClient

logger = logging.getLogger(__name__)


class Admin(Protocol):
    """What the swapper asks of one weak server (VllmAdminClient; an in-memory one in unit tests)."""

    async def ready(self) -> bool: ...
    async def models(self) -> list[ServedModel]: ...
    async def adapters(self) -> list[ServedModel]: ...
    async def load_lora_adapter(self, name: str, path: str) -> None: ...
    async def unload_lora_adapter(self, name: str) -> None: ...
    async def greedy_logprobs(self, model: str, messages: list[dict], max_tokens: int = 8) -> list[float]: ...
    async def aclose(self) -> None: ...


class WeakReplicas:
    def __init__(
        self,
        roots: list[str] | None = None,
        *,
        dns: str | None = None,
        api_key: str | None = None,
        admins: dict[str, Admin] | None = None,
    ):
        """`roots`: server roots (http://host:port); `dns`: "host:port" resolved at each use instead;
        `admins`: ready-made clients by name (tests)."""
        self.roots, self.dns, self.api_key = list(roots or []), dns, api_key
        self._admins: dict[str, Admin] = dict(admins or {})
        self._fixed = admins is not None

    async def _discover(self) -> list[str]:
        if self.dns is None:
            return self.roots
        host, _, port = self.dns.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as exc:
            logger.warning("weak replicas: %s does not resolve (%s)", self.dns, exc)
            return []
        addresses = sorted({str(info[4][0]) for info in infos})
        return [f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses]

    async def members(self) -> dict[str, Admin]:
        """Every replica known now, by root URL, with its admin client (kept across calls)."""
        if self._fixed:
            return dict(self._admins)
        roots = await self._discover()
        for gone in set(self._admins) - set(roots):
            await self._admins.pop(gone).aclose()
        for root in roots:
            if root not in self._admins:
                self._admins[root] = VllmAdminClient(root, timeout=60, api_key=self.api_key)
        return dict(self._admins)

    async def ready(self) -> dict[str, Admin]:
        """The members that answer /health and list their models now."""
        members = await self.members()
        answers = await asyncio.gather(*(admin.ready() for admin in members.values()))
        return {root: admin for (root, admin), ok in zip(members.items(), answers, strict=True) if ok}

    async def aclose(self) -> None:
        for admin in self._admins.values():
            await admin.aclose()
        self._admins.clear()
