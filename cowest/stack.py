"""The local stack behind `cowest up/down/status`: Redis, the weak vLLM server, the strong vLLM server."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cowest.models import pull_profile
from cowest.processes import ProcessTable, StackError, group_pss_mb, wait_until_ready
from cowest.redis_server import redis_ping, start_redis
from services.weak_server.admin_client import VllmAdminClient
from services.weak_server.settings import StrongServerSettings, VllmServerSettings, WeakServerSettings
from shared.config import CowestSettings
from shared.models import get_model, get_profile

SERVERS = ("weak", "strong")


@dataclass
class ComponentStatus:
    name: str
    state: str  # healthy | starting | down | external | unreachable
    pid: int | None = None
    port: int | None = None
    model: str | None = None
    url: str | None = None
    adapters: list[str] = field(default_factory=list)
    memory_mib: float | None = None  # PSS of the process group


class Stack:
    def __init__(self, settings: CowestSettings | None = None, weak: VllmServerSettings | None = None,
                 strong: VllmServerSettings | None = None):
        self.settings = settings or CowestSettings()
        self.servers: dict[str, VllmServerSettings] = {
            "weak": weak or WeakServerSettings(), "strong": strong or StrongServerSettings()}
        self.table = ProcessTable(self.settings.run_dir)

    # --- up -------------------------------------------------------------------------------
    def start(self, profile: str, report: Callable[[str], None] = lambda m: None) -> list[str]:
        """Start whatever is not running yet; returns the names started (wait with `wait_ready`)."""
        chosen = get_profile(profile)
        pull_profile(self.settings, profile, report)
        started = []
        if not redis_ping(self.settings.redis_url):
            if (rec := self.table.get("redis")) is None or not rec.alive():
                start_redis(self.settings, self.table, report)
                started.append("redis")
        for role, key in (("weak", chosen.weak), ("strong", chosen.strong)):
            record = self.table.get(role)
            if record and record.alive():
                if record.model != key:
                    raise StackError(f"the {role} server already serves {record.model}; run `cowest down` first")
                continue
            server = self.servers[role]
            if _port_in_use(server.host, server.port):
                raise StackError(f"port {server.port} ({role} server) is taken by another process; "
                                 f"free it or set COWEST_{role.upper()}_PORT")
            spec = get_model(key)
            argv = server.argv(self.settings.models_dir / key, key, spec.serve_dtype)
            self.table.start(role, argv, server.env(), port=server.port, model=key,
                             extra={"profile": profile, "url": server.base_url})
            started.append(role)
        (self.settings.run_dir / "stack.json").write_text(json.dumps({"profile": profile}))
        return started

    async def wait_ready(self, names: list[str], timeout: float,
                         on_ready: Callable[[str], None] = lambda name: None) -> None:
        """Wait until every named part answers; on failure raise with the part's last log lines."""
        await wait_until_ready(self.table, {name: self._probe(name) for name in names}, timeout, on_ready)

    def _probe(self, name: str) -> Callable[[], Awaitable[bool]]:
        if name == "redis":
            return lambda: asyncio.to_thread(redis_ping, self.settings.redis_url)

        async def vllm_ready() -> bool:
            async with VllmAdminClient(self.servers[name].base_url, timeout=5) as client:
                return await client.ready()

        return vllm_ready

    # --- down -----------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> dict[str, str]:
        """Stop every recorded process (servers first, Redis last); SIGKILL after `timeout`."""
        names = [n for n in (*SERVERS, "redis") if n in self.table.names()]
        names += [n for n in self.table.names() if n not in names and n != "stack"]
        outcomes = {name: self.table.stop(name, timeout) for name in names}
        (self.settings.run_dir / "stack.json").unlink(missing_ok=True)
        return outcomes

    # --- status ---------------------------------------------------------------------------
    async def status(self) -> list[ComponentStatus]:
        rec = self.table.get("redis")
        redis_up = redis_ping(self.settings.redis_url)
        statuses = [ComponentStatus(
            "redis",
            ("healthy" if redis_up else "starting") if rec and rec.alive() else ("external" if redis_up else "down"),
            pid=rec.pid if rec and rec.alive() else None, port=urlparse(self.settings.redis_url).port or 6379,
            url=self.settings.redis_url,
            memory_mib=group_pss_mb(rec.pid) if rec and rec.alive() else None)]
        for role in SERVERS:
            server, record = self.servers[role], self.table.get(role)
            status = ComponentStatus(role, "down", port=server.port, url=server.base_url)
            if record and record.alive():
                status.pid, status.model = record.pid, record.model
                status.memory_mib = group_pss_mb(record.pid)
            async with VllmAdminClient(server.base_url, timeout=5) as client:
                if await client.health():
                    try:
                        cards = await client.models()
                        status.state = "healthy"
                        status.model = next((c.id for c in cards if not c.is_adapter), status.model)
                        status.adapters = [c.id for c in cards if c.is_adapter]
                    except Exception:  # noqa: BLE001
                        status.state = "starting"
                elif status.pid:
                    status.state = "starting"
            statuses.append(status)
        return statuses


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
