"""The local stack behind `cowest up/down/status`: Redis, the weak and strong vLLM servers, the
orchestrator and the trainer.

With COWEST_STRONG_URL set, the strong model is that external OpenAI-compatible endpoint
(COWEST_STRONG_MODEL, COWEST_STRONG_API_KEY) and no embedded strong server is started.

The stack hands each service typed settings (`orchestrator_settings`, `trainer_settings`): a service process
gets them as the environment its settings class reads (`settings_env`), so no variable name is spelled here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from cowest.processes import ProcessTable, StackError, group_pss_mb, wait_until_ready
from cowest.provision import pull_profile
from cowest.redis_server import redis_ping, start_redis
from services.orchestrator.config import OrchestratorSettings
from services.strong_server.settings import LlamaCppServerSettings, StrongServerSettings
from services.trainer.config import TrainerSettings
from services.weak_server.admin_client import VllmAdminClient
from services.weak_server.settings import WeakServerSettings
from shared.auth import machine_admin_key
from shared.catalog import get_model, get_profile
from shared.config import CowestSettings, Endpoints
from shared.vllm_launch import VllmServerSettings

SERVERS = ("weak", "strong")
PARTS = ("redis", *SERVERS, "orchestrator", "trainer")  # start order; stop goes the other way


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
    def __init__(
        self,
        settings: CowestSettings | None = None,
        weak: VllmServerSettings | None = None,
        strong: VllmServerSettings | None = None,
        orchestrator: OrchestratorSettings | None = None,
    ):
        self.settings = settings or CowestSettings()
        self.servers: dict[str, VllmServerSettings] = {
            "weak": weak or WeakServerSettings(),
            "strong": strong or StrongServerSettings(),
        }
        strong_server = self.servers["strong"]  # llama.cpp, when the profile's engine is, listens where vLLM would
        self.llamacpp = LlamaCppServerSettings(host=strong_server.host, port=strong_server.port)
        self.orchestrator = orchestrator or OrchestratorSettings()
        self.trainer = TrainerSettings()
        self.endpoints = Endpoints()  # what the environment says: an external strong endpoint, its key
        self.external_strong = "strong_url" in self.endpoints.model_fields_set
        self.table = ProcessTable(self.settings.run_dir)

    @property
    def orchestrator_url(self) -> str:
        return f"http://{self.orchestrator.host}:{self.orchestrator.port}"

    @property
    def trainer_url(self) -> str:
        return f"http://{self.trainer.host}:{self.trainer.port}"

    def stack_endpoints(self, profile: str) -> Endpoints:
        """Where this stack's parts are: its weak server, its strong server, its Redis, model names from the
        profile — except what the environment sets explicitly (COWEST_WEAK_URL and COWEST_WEAK_API_KEY,
        COWEST_STRONG_URL, COWEST_REDIS_URL, model names): the CLI inside a container of a compose or Kubernetes
        deployment then reaches that deployment's servers, not this machine's ports."""
        chosen = get_profile(profile)
        explicit = self.endpoints.model_fields_set
        update: dict[str, object] = {"weak_model": chosen.weak, "redis_url": self.settings.redis_url}
        if "weak_url" not in explicit:
            update |= {"weak_url": f"{self.servers['weak'].base_url}/v1", "weak_api_key": self.weak_server_key()}
        if not self.external_strong:
            update |= {"strong_url": f"{self.servers['strong'].base_url}/v1", "strong_model": chosen.strong}
        return self.endpoints.model_copy(update={k: v for k, v in update.items() if k not in explicit})

    def weak_server_key(self) -> SecretStr:
        """The weak vLLM server's API key (its LoRA admin routes included): COWEST_WEAK_API_KEY, else generated."""
        return self.servers["weak"].api_key or machine_admin_key(self.settings.run_dir / "weak-server.key")

    def server_key(self, role: str) -> str | None:
        return self.weak_server_key().get_secret_value() if role == "weak" else None

    def admin_key(self) -> SecretStr:
        """COWEST_ADMIN_KEY, else this machine's generated key (shared/auth.py)."""
        return self.trainer.admin_key or machine_admin_key(self.settings.run_dir / "admin.key")

    def orchestrator_settings(self, profile: str) -> OrchestratorSettings:
        return self.orchestrator.model_copy(
            update={"endpoints": self.stack_endpoints(profile), "admin_key": self.admin_key()}
        )

    def trainer_settings(self, profile: str | None = None) -> TrainerSettings:
        """The trainer's view of this stack (the CLI's trainer commands use it too)."""
        profile = profile or self.profile()
        spec = get_profile(profile)
        # The embedded strong server's capacity, unless COWEST_TRAINER_CONCURRENCY says otherwise or the strong
        # model is an external endpoint (a hosted API serves many requests at once).
        keep = "concurrency" in self.trainer.model_fields_set or self.external_strong
        return self.trainer.model_copy(
            update={
                "endpoints": self.stack_endpoints(profile),
                "admin_key": self.admin_key(),
                "base_model_dir": self.settings.models_dir / spec.weak,
                "concurrency": self.trainer.concurrency if keep else spec.strong_in_flight,
            }
        )

    def service_env(self, settings: BaseSettings, *fields: str) -> dict[str, str]:
        """What a service process needs on top of this process's environment (which it inherits): the fields
        the stack decides, and this machine's COWEST_HOME."""
        return settings_env(settings, *fields) | settings_env(self.settings, "home")

    def profile(self) -> str:
        try:
            return json.loads((self.settings.run_dir / "stack.json").read_text())["profile"]
        except (OSError, ValueError, KeyError):
            return self.settings.profile

    # --- up -------------------------------------------------------------------------------
    def start(self, profile: str, report: Callable[[str], None] = lambda m: None) -> list[str]:
        """Start whatever is not running yet; returns the names started (wait with `wait_ready`)."""
        chosen = get_profile(profile)
        pulled = {r.key: r.path for r in pull_profile(self.settings, profile, report)}
        started = []
        if not redis_ping(self.settings.redis_url):
            if (rec := self.table.get("redis")) is None or not rec.alive():
                start_redis(self.settings, self.table, report)
                started.append("redis")
        roles = [("weak", chosen.weak)] + ([] if self.external_strong else [("strong", chosen.strong)])
        for role, key in roles:
            record = self.table.get(role)
            if record and record.alive():
                if record.model != key:
                    raise StackError(f"the {role} server already serves {record.model}; run `cowest down` first")
                continue
            server = self.servers[role]
            if _port_in_use(server.host, server.port):
                raise StackError(
                    f"port {server.port} ({role} server) is taken by another process; "
                    f"free it or set COWEST_{role.upper()}_PORT"
                )
            spec = get_model(key)
            if role == "strong" and chosen.engine == "llamacpp":
                argv, env = self.llamacpp.argv(pulled[key], key), {}  # the GGUF file
            else:
                if role == "weak":
                    server = server.model_copy(update={"api_key": self.weak_server_key()})
                argv, env = server.argv(self.settings.models_dir / key, key, spec.vllm_dtype), server.env()
            self.table.start(
                role, argv, env, port=server.port, model=key, extra={"profile": profile, "url": server.base_url}
            )
            started.append(role)
        record = self.table.get("orchestrator")
        if not (record and record.alive()):
            if _port_in_use(self.orchestrator.host, self.orchestrator.port):
                raise StackError(
                    f"port {self.orchestrator.port} (orchestrator) is taken by another process; "
                    "free it or set COWEST_ORCH_PORT"
                )
            env = self.service_env(self.orchestrator_settings(profile), "endpoints", "admin_key")
            self.table.start(
                "orchestrator",
                [sys.executable, "-m", "services.orchestrator.app"],
                env,
                port=self.orchestrator.port,
                model=None,
                extra={"profile": profile, "url": self.orchestrator_url},
            )
            started.append("orchestrator")
        record = self.table.get("trainer")
        if not (record and record.alive()):
            if _port_in_use(self.trainer.host, self.trainer.port):
                raise StackError(
                    f"port {self.trainer.port} (trainer) is taken by another process; "
                    "free it or set COWEST_TRAINER_PORT"
                )
            self.table.start(
                "trainer",
                [sys.executable, "-m", "services.trainer.app"],
                self.service_env(
                    self.trainer_settings(profile), "endpoints", "base_model_dir", "admin_key", "concurrency"
                ),
                port=self.trainer.port,
                model=None,
                extra={"profile": profile, "url": self.trainer_url},
            )
            started.append("trainer")
        (self.settings.run_dir / "stack.json").write_text(json.dumps({"profile": profile}))
        return started

    async def wait_ready(
        self, names: list[str], timeout: float, on_ready: Callable[[str], None] = lambda name: None
    ) -> None:
        """Wait until every named part answers; on failure raise with the part's last log lines."""
        await wait_until_ready(self.table, {name: self._probe(name) for name in names}, timeout, on_ready)

    def _probe(self, name: str) -> Callable[[], Awaitable[bool]]:
        if name == "redis":
            return lambda: asyncio.to_thread(redis_ping, self.settings.redis_url)
        if name == "orchestrator":
            return lambda: http_ok(f"{self.orchestrator_url}/healthz")
        if name == "trainer":
            return lambda: http_ok(f"{self.trainer_url}/healthz")

        async def vllm_ready() -> bool:
            async with VllmAdminClient(
                self.servers[name].base_url, timeout=5, api_key=self.server_key(name)
            ) as client:
                return await client.ready()

        return vllm_ready

    # --- down -----------------------------------------------------------------------------
    def stop(self, timeout: float = 20.0) -> dict[str, str]:
        """Stop every recorded process (servers first, Redis last); SIGKILL after `timeout`."""
        names = [n for n in reversed(PARTS) if n in self.table.names()]
        names += [n for n in self.table.names() if n not in names and n != "stack"]
        outcomes = {name: self.table.stop(name, timeout) for name in names}
        (self.settings.run_dir / "stack.json").unlink(missing_ok=True)
        return outcomes

    # --- status ---------------------------------------------------------------------------
    async def status(self) -> list[ComponentStatus]:
        rec = self.table.get("redis")
        redis_up = redis_ping(self.settings.redis_url)
        statuses = [
            ComponentStatus(
                "redis",
                ("healthy" if redis_up else "starting")
                if rec and rec.alive()
                else ("external" if redis_up else "down"),
                pid=rec.pid if rec and rec.alive() else None,
                port=urlparse(self.settings.redis_url).port or 6379,
                url=redacted(self.settings.redis_url),
                memory_mib=group_pss_mb(rec.pid) if rec and rec.alive() else None,
            )
        ]
        for role in SERVERS:
            server, record = self.servers[role], self.table.get(role)
            status = ComponentStatus(role, "down", port=server.port, url=server.base_url)
            if record and record.alive():
                status.pid, status.model = record.pid, record.model
                status.memory_mib = group_pss_mb(record.pid)
            async with VllmAdminClient(server.base_url, timeout=5, api_key=self.server_key(role)) as client:
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
        statuses.append(
            await self._service_status("orchestrator", self.orchestrator_url, "/readyz", self.orchestrator.port)
        )
        statuses.append(await self._service_status("trainer", self.trainer_url, "/healthz", self.trainer.port))
        return statuses

    async def _service_status(self, name: str, url: str, probe: str, port: int) -> ComponentStatus:
        record = self.table.get(name)
        alive = bool(record and record.alive())
        state = "healthy" if await http_ok(url + probe) else ("starting" if alive else "down")
        return ComponentStatus(
            name,
            state,
            pid=record.pid if alive else None,
            port=port,
            url=url,
            memory_mib=group_pss_mb(record.pid) if alive else None,
        )


async def http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def settings_env(settings: BaseSettings, *fields: str) -> dict[str, str]:
    """The environment variables from which `type(settings)()` rebuilds these values: the named fields (default:
    every field), under the class's env prefix; a nested settings object under its own prefix."""
    prefix = settings.model_config.get("env_prefix", "")
    env: dict[str, str] = {}
    for name in fields or type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseSettings):
            env |= settings_env(value)
        elif value is None:
            continue
        elif isinstance(value, SecretStr):
            env[f"{prefix}{name}".upper()] = value.get_secret_value()
        elif isinstance(value, list):
            env[f"{prefix}{name}".upper()] = ",".join(map(str, value))
        elif isinstance(value, str | int | float | bool | Path):
            env[f"{prefix}{name}".upper()] = str(value)
    return env


def redacted(url: str) -> str:
    """A URL fit to print: its password (Redis AUTH, `redis://user:secret@host`) replaced by ***."""
    parts = urlparse(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
