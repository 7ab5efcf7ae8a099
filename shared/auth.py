"""Bearer keys: client keys (COWEST_API_KEYS, the orchestrator's /v1 API) and the admin key (COWEST_ADMIN_KEY:
every trainer route but /healthz, and the orchestrator's admin routes). They are separate so that a leaked
client key cannot train, roll back or register domains.

An admin surface with no admin key configured refuses every call (403): there is no open default. `cowest up`
generates one per machine (COWEST_HOME/run/admin.key, mode 0600) and hands it to the services and the CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from pydantic import SecretStr


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def matches(token: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every key."""
    return token is not None and any(hmac.compare_digest(token.encode(), k.encode()) for k in keys)


def key_id(token: str) -> str:
    """A caller's name derived from its key (never the key): what feedback is attributed to when keys are set."""
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def admin_headers(key: SecretStr | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}


def machine_admin_key(path: Path) -> SecretStr:
    """This machine's admin key: read, or created (random, owner-only) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return SecretStr(path.read_text().strip())
