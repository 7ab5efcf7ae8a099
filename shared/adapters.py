"""Where the active LoRA adapter of each domain is recorded (Redis), shared by orchestrator and trainer.

`adapter:active:<domain>` holds an immutable, versioned adapter name (e.g. `general-v3`): never
reload weights under an existing name (vLLM keys its prefix cache by name). A change is announced
on the `adapter:active:changed` channel so orchestrators update their cache without polling.
"""

from __future__ import annotations

import json
import re

ACTIVE_KEY = "adapter:active:{domain}"
ACTIVE_PATTERN = "adapter:active:*"
CHANGED_CHANNEL = "adapter:active:changed"
_VERSION = re.compile(r"-(v\d+)$")


def active_key(domain: str) -> str:
    return ACTIVE_KEY.format(domain=domain)


def versioned_name(domain: str, version: int) -> str:
    return f"{domain}-v{version}"


def version_of(adapter: str | None) -> str | None:
    """`general-v3` -> `v3`; None for the base model or an unversioned name."""
    match = _VERSION.search(adapter or "")
    return match.group(1) if match else None


async def set_active_adapter(redis, domain: str, adapter: str | None) -> None:
    """Point a domain at an adapter version (None: back to the base model) and announce it."""
    async with redis.pipeline(transaction=True) as pipe:
        if adapter:
            pipe.set(active_key(domain), adapter)
        else:
            pipe.delete(active_key(domain))
        pipe.publish(CHANGED_CHANNEL, json.dumps({"domain": domain, "adapter": adapter}))
        await pipe.execute()
