"""Hot-swap protocol over stock vLLM (one weak server or several replicas), against what users of runtime LoRA
loading report going wrong: weights reloaded under a reused name (vLLM keys its prefix cache by name: stale
outputs), a load that "succeeds" but leaves the base model answering, and adapters gone after a server restart.

validate (sha256, base, rank) -> load under the new immutable name -> verify it is listed with the
right parent and that it really changes the model (log-probs differ from the base) -> flip the
domain's alias in Redis (orchestrators switch on the next request) -> keep `rollback_depth` older
versions loaded, unload what is older once in-flight requests had `drain_s` to finish.
With several weak replicas (`replicas.py`) the load and the verification run on every ready replica and the
alias flips only when all of them have the version; a replica that goes away during the rollout is skipped
(the version is there when it comes back: `reconcile`, or vLLM's filesystem resolver at its first request).
The desired state lives in Redis (alias + history + a running canary's candidate), so `reconcile` re-loads it
after a vLLM restart. A canary (`canary.py` decides) is loaded and verified the same way before it gets traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from redis.asyncio import Redis
from redis.exceptions import LockError

from services.trainer.config import TrainerSettings
from services.trainer.registry import AdapterError, AdapterRegistry
from services.trainer.replicas import Admin, WeakReplicas
from services.weak_server.admin_client import VllmAdminError
from shared import knowledge as shared_knowledge
from shared import redis_keys
from shared.adapters import BASE_ADAPTER, Canary, get_active_adapter, get_canary, set_active_adapter, set_canary
from shared.knowledge import Knowledge

logger = logging.getLogger(__name__)
STATE_LOCK_S = 120  # a load + verify + flip takes seconds; the lock expires if its holder was killed
WARMUP = [{"role": "user", "content": "Briefly, what is a good answer to a hard question?"}]


class AdapterSwapper:
    def __init__(
        self,
        settings: TrainerSettings,
        registry: AdapterRegistry,
        redis: Redis,
        admin: Admin | None = None,
        replicas: WeakReplicas | None = None,
    ):
        """`replicas` default to the settings' (`weak_replicas`, `weak_replicas_dns`, else the one weak server);
        `admin` stands for a single replica (tests)."""
        self.settings, self.registry, self.redis = settings, registry, redis
        if admin is not None:
            replicas = WeakReplicas(admins={"weak": admin})
        self.replicas = replicas or WeakReplicas(
            settings.weak_replicas or settings.endpoints.weak_roots,
            dns=settings.weak_replicas_dns,
            api_key=settings.endpoints.weak_key(),
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # holders and waiters of each domain's lock
        self._retiring: set[asyncio.Task] = set()
        # (replica, loaded version no alias or history wants) -> first seen (monotonic)
        self._unwanted: dict[tuple[str, str], float] = {}
        # Long past any drain (requests still on a version just rolled away from) and any reconcile pass.
        self.stale_after_s = max(30.0, 3 * settings.drain_s)

    @asynccontextmanager
    async def _lock(self, domain: str) -> AsyncIterator[None]:
        """One change of a domain's adapter state at a time: in this process (an asyncio lock) and across
        processes (a Redis lock: the service, the CLI and a demo may all swap or roll back)."""
        local = self._locks.setdefault(domain, asyncio.Lock())
        self._users[domain] = self._users.get(domain, 0) + 1
        try:
            async with local:
                lock = self.redis.lock(
                    redis_keys.adapter_state_lock(domain), timeout=STATE_LOCK_S, blocking_timeout=STATE_LOCK_S
                )
                if not await lock.acquire():
                    raise AdapterError(f"another process has been changing {domain}'s adapters for {STATE_LOCK_S} s")
                try:
                    yield
                finally:
                    with contextlib.suppress(LockError):
                        await lock.release()
        finally:
            self._users[domain] -= 1
            if not self._users[domain]:  # nobody holds or waits: no lock per name ever asked about stays behind
                del self._users[domain], self._locks[domain]

    async def retired(self) -> None:
        """Wait for the retire passes scheduled so far (each after its drain)."""
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def aclose(self) -> None:
        await self.retired()  # a short-lived swapper (the CLI, the demo) still retires the versions its flip made old
        await self.replicas.aclose()

    async def loaded(self) -> set[str]:
        """The adapters loaded on every ready replica (the intersection: what any request can be served with)."""
        ready = await self.replicas.ready()
        sets = [{c.id for c in await admin.adapters()} for admin in ready.values()]
        return set.intersection(*sets) if sets else set()

    async def load_verified(self, name: str) -> Knowledge | None:
        """Validate an adapter, publish its knowledge, then load (if not yet loaded) and verify it on every ready
        replica; raise AdapterError, unloaded everywhere, when one that is still up fails. Returns the version's
        knowledge (None: it drafts without a lookup)."""
        manifest = self.registry.validate(
            name, base_model_path=self.settings.base_model_dir, max_rank=self.settings.max_lora_rank
        )
        self._publish(name)
        if (knowledge := self.registry.knowledge(name)) is not None:  # before any request can draft with it
            await shared_knowledge.publish(self.redis, name, knowledge)
        ready = await self.replicas.ready()
        if not ready:
            raise AdapterError(f"no weak replica is ready to load {name}")
        results = await asyncio.gather(
            *(self._load_verified_on(admin, name) for admin in ready.values()), return_exceptions=True
        )
        failed = [(root, r) for root, r in zip(ready, results, strict=True) if isinstance(r, BaseException)]
        still_up = [(root, r) for root, r in failed if await ready[root].ready()]
        for root, error in failed:
            if (root, error) not in still_up:  # it went away mid-rollout: brought up to date when it is back
                logger.warning("weak replica %s went away while loading %s (%s): skipped", root, name, error)
        if still_up or len(failed) == len(ready):
            await self.unload(name)
            root, error = (still_up or failed)[0]
            if not isinstance(error, Exception):
                raise error
            raise AdapterError(f"{name} on {root}: {error}") from error
        # Quorum: at least half the known replicas must hold the version before the alias flips (2 of 3, 1 of 2: a
        # rollout goes on while one of two replicas restarts, not while most of a fleet is away). A replica skipped
        # here serves no request for it meanwhile (the orchestrator tries the next replica on its 404, and a
        # restarted replica is not ready until it holds the desired versions: services/weak_server/ready.py).
        members, verified = len(await self.replicas.members()), len(ready) - len(failed)
        if verified < (quorum := (members + 1) // 2):
            await self.unload(name)
            raise AdapterError(
                f"{name} verified on {verified} of {members} weak replicas, below the quorum of {quorum}: not flipped"
            )
        logger.info(
            "adapter %s (round %s, %s pairs) loaded and verified on %d replica(s)",
            name,
            manifest.round,
            manifest.pairs,
            len(ready) - len(failed),
        )
        return knowledge

    def _publish(self, name: str) -> None:
        served = self.settings.served_adapters_dir
        if served is not None:
            self.registry.publish(name, served, str(self.settings.weak_served_base or self.settings.base_model_dir))

    def _load_path(self, name: str) -> str:
        served = self.settings.served_adapters_dir
        return str(served / name if served is not None else self.registry.path(name))

    async def _load_verified_on(self, admin: Admin, name: str) -> None:
        if name not in {c.id for c in await admin.adapters()}:
            try:
                await admin.load_lora_adapter(name, self._load_path(name))
            except VllmAdminError as exc:
                raise AdapterError(f"vLLM refused {name}: {exc.message}") from exc
        try:
            cards = {c.id: c for c in await admin.models()}
            if cards.get(name) is None or cards[name].parent != self.settings.endpoints.weak_model:
                raise AdapterError(f"{name} is not listed under {self.settings.endpoints.weak_model} after loading")
            # Greedy tokens may coincide after a short round; log-probs still move when the adapter is applied.
            base, tuned = await asyncio.gather(
                admin.greedy_logprobs(self.settings.endpoints.weak_model, WARMUP),
                admin.greedy_logprobs(name, WARMUP),
            )
            if max((abs(a - b) for a, b in zip(base, tuned, strict=False)), default=0.0) < 1e-6:
                raise AdapterError(f"{name} does not change the model's output: not applied, or a no-op adapter")
        except (VllmAdminError, httpx.HTTPError) as exc:
            raise AdapterError(str(exc)) from exc

    async def activate(self, domain: str, name: str, *, from_canary: bool = False) -> float:
        """Load, verify and make `name` the domain's active adapter (ending any canary). Returns load->flip
        seconds. `from_canary`: only while `name` is the domain's running canary (a promotion)."""
        async with self._lock(domain):
            t0 = time.perf_counter()
            if from_canary and getattr(await get_canary(self.redis, domain), "adapter", None) != name:
                raise AdapterError(f"{name} is not {domain}'s canary (any more)")
            if (knowledge := await self.load_verified(name)) is not None:  # base drafts, strong + retrieval
                await self.redis.set(redis_keys.domain_knowledge(domain), knowledge.to_json())
            await set_active_adapter(self.redis, domain, name, history="push")
            seconds = time.perf_counter() - t0
            await self._record_desired(domain)
        self._retire_later(domain)
        return seconds

    async def start_canary(self, domain: str, canary: Canary) -> None:
        """Load and verify the candidate on every replica, then give it the canary's share of the traffic, beside
        `canary.active`, which must still be the domain's active version (its baseline was read for it)."""
        async with self._lock(domain):
            active = await get_active_adapter(self.redis, domain)
            if canary.adapter == active:
                raise AdapterError(f"{canary.adapter} is already {domain}'s active version")
            if canary.active != active:
                raise AdapterError(f"{domain}'s active version changed to {active} meanwhile: start the canary again")
            await self.load_verified(canary.adapter)
            await set_canary(self.redis, domain, canary)
            await self._record_desired(domain)

    async def end_canary(self, domain: str, name: str) -> None:
        """Take the candidate's share back to the active version (a rollback of the canary); it is unloaded
        once its in-flight requests had `drain_s`."""
        async with self._lock(domain):
            if getattr(await get_canary(self.redis, domain), "adapter", None) != name:
                raise AdapterError(f"{name} is not {domain}'s canary (any more)")
            await set_canary(self.redis, domain, None)
            await self._record_desired(domain)
        self._retire_later(domain)

    def _retire_later(self, domain: str) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(domain))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _record_desired(self, domain: str) -> None:
        """Write the desired set where joining replicas read it before they report ready (with a shared
        served-adapters directory; without one, replicas learn it only from reconcile)."""
        if self.settings.served_adapters_dir is not None:
            self.registry.publish_desired(self.settings.served_adapters_dir, domain, await self._wanted(domain))

    async def _wanted(self, domain: str) -> list[str]:
        """The versions every replica must have: the active one, the rollback depth, a running canary's."""
        wanted = await self.redis.lrange(redis_keys.adapter_history(domain), 0, self.settings.rollback_depth)
        for name in (
            await get_active_adapter(self.redis, domain),
            getattr(await get_canary(self.redis, domain), "adapter", None),
        ):
            if name and name not in wanted:
                wanted.insert(0, name)
        return wanted

    async def rollback(self, domain: str) -> str | None:
        """Point the domain back at the previous version (or the base model when there is none)."""
        async with self._lock(domain):
            key = redis_keys.adapter_history(domain)
            history = await self.redis.lrange(key, 0, -1)
            if not history:
                raise AdapterError(f"{domain} has no adapter to roll back from")
            previous = history[1] if len(history) > 1 else None
            if previous:
                await self.load_verified(previous)
            await set_active_adapter(self.redis, domain, previous, history="pop")
            await self._record_desired(domain)
            self.registry.update_metrics(history[0], {"rolled_back_at": time.time()})
            logger.warning("%s rolled back from %s to %s", domain, history[0], previous or "the base model")
            return previous

    async def check_live_regression(self, domain: str, store) -> str | None:
        """Roll back when the active version's live score fell below its predecessor's by more than the
        threshold (each with enough scores). Returns what it rolled back to ("base" for the base model),
        or None when it did not roll back."""
        history = await self.redis.lrange(redis_keys.adapter_history(domain), 0, 1)
        if not history:
            return None
        previous = history[1] if len(history) > 1 else None
        (n_now, now), (n_prev, prev) = await asyncio.gather(
            store.live_score(domain, history[0]), store.live_score(domain, previous)
        )
        need = self.settings.auto_rollback_min_feedback
        if n_now < need or n_prev < need or now >= prev - self.settings.auto_rollback_threshold:
            return None
        logger.warning(
            "%s: live score of %s is %.3f vs %.3f for %s: rolling back",
            domain,
            history[0],
            now,
            prev,
            previous or "the base model",
        )
        self.registry.update_metrics(history[0], {"live_score": now, "live_score_previous": prev})
        return await self.rollback(domain) or BASE_ADAPTER

    async def _retire(self, domain: str) -> None:
        """Unload versions older than the rollback depth, after in-flight requests had time to drain."""
        await asyncio.sleep(self.settings.drain_s)
        # Under the domain's lock: an activation in progress has loaded its version but not yet pushed it onto
        # the history, and must not see it unloaded (found by tests/trainer/test_swap_unit.py with drain_s=0).
        async with self._lock(domain):
            keep = set(await self._wanted(domain))
            for admin in (await self.replicas.ready()).values():
                for card in await admin.adapters():
                    if card.id.startswith(f"{domain}-v") and card.id not in keep:
                        await self._unload_on(admin, card.id)

    async def unload(self, name: str) -> None:
        """Unload from every replica that has it (one that is down has nothing loaded)."""
        for admin in (await self.replicas.members()).values():
            await self._unload_on(admin, name)

    @staticmethod
    async def _unload_on(admin: Admin, name: str) -> None:
        try:
            await admin.unload_lora_adapter(name)
        except (VllmAdminError, httpx.HTTPError):
            pass

    async def reconcile(self, domain: str) -> list[str]:
        """Bring every ready replica to the desired set: re-load the adapters (active + rollback depth + a running
        canary's) a replica lacks (after a restart, or one that joined); unload the domain's versions nobody wants
        (a candidate of a round whose trainer was killed, a version rolled away from) once they have been unwanted
        for `stale_after_s` and no round of the domain is running. Returns the versions re-loaded somewhere."""
        wanted = await self._wanted(domain)
        if self.settings.served_adapters_dir is not None:
            for name in wanted:  # published before a replica's readiness check asks for it
                with contextlib.suppress(AdapterError, OSError):  # one not in this registry: loaded by hand
                    self._publish(name)
            self.registry.publish_desired(self.settings.served_adapters_dir, domain, wanted)
        missing: list[str] = []
        now = time.monotonic()
        for root, admin in (await self.replicas.ready()).items():
            loaded = {c.id for c in await admin.adapters()}
            for name in wanted:
                if name not in loaded:
                    self.registry.validate(
                        name, base_model_path=self.settings.base_model_dir, max_rank=self.settings.max_lora_rank
                    )
                    self._publish(name)
                    async with self._lock(domain):
                        try:
                            await self._load_verified_on(admin, name)
                        except AdapterError:
                            await self._unload_on(admin, name)
                            raise
                    logger.info("reconcile: loaded %s on %s", name, root)
                    missing += [name] if name not in missing else []
            unwanted = {(root, n) for n in loaded if n.startswith(f"{domain}-v") and n not in wanted}
            for key in [k for k in self._unwanted if k[0] == root and k[1].startswith(f"{domain}-v")]:
                if key not in unwanted:
                    del self._unwanted[key]
            for key in unwanted:
                since = self._unwanted.setdefault(key, now)
                if now - since >= self.stale_after_s and not await self.redis.exists(redis_keys.round_lock(domain)):
                    async with self._lock(domain):
                        await self._unload_on(admin, key[1])
                    logger.warning("unloaded %s from %s: neither active nor kept for rollback", key[1], root)
                    del self._unwanted[key]
        return missing
