"""Redis with TLS and one ACL user per service (`shared.redis_keys.acl_rules`): each service does its whole job
under its own user over TLS, and each user is refused what the other service owns and what no service needs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from redis.exceptions import NoPermissionError

from services.orchestrator.app import create_app
from services.trainer.app import Trainer
from shared import redis_keys
from shared.adapters import set_active_adapter
from tests.support.fake_upstream import fake_upstream
from tests.support.redis import wait_for_ping
from tests.support.servers import free_port, serve_app
from tests.support.settings import ADMIN, orch_settings, trainer_settings

PASSWORDS = {"orchestrator": "orch-secret-1", "trainer": "trainer-secret-2"}


@pytest.fixture
def tls_redis(tmp_path) -> Iterator[tuple[int, Path]]:
    """A redis-server that speaks TLS only (a self-signed certificate for 127.0.0.1), with both ACL users."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
        + ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        + ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    admin = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))
    try:
        wait_for_ping(admin)
        for name, password in PASSWORDS.items():
            admin.execute_command("ACL", "SETUSER", name, "on", f">{password}", *redis_keys.acl_rules(name).split())
        yield port, cert
    finally:
        server.terminate()
        server.wait(10)


def url_of(user: str, port: int, cert: Path) -> str:
    return f"rediss://{user}:{PASSWORDS[user]}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"


async def test_each_service_works_under_its_own_user_over_tls_and_nothing_more(tls_redis, tmp_path):
    port, cert = tls_redis
    orch_url, trainer_url = url_of("orchestrator", port, cert), url_of("trainer", port, cert)
    with ExitStack() as stack:
        weak, _ = stack.enter_context(fake_upstream("tiny-weak", ["ok"], text="a draft"))
        strong, _ = stack.enter_context(fake_upstream("tiny-strong", ["ok"], text="an answer"))
        settings = orch_settings(weak, strong, orch_url, tmp_path / "spool.jsonl")
        url = stack.enter_context(serve_app(create_app(settings)))
        body = httpx.post(f"{url}/v1/collaborate", json={"question": "q?"}, timeout=30).json()
        assert body["degraded"] is None
        fb = httpx.post(f"{url}/v1/feedback", json={"id": body["id"], "correct_answer": "an answer"}, timeout=10)
        assert fb.status_code == 202, fb.text
        checks = httpx.get(f"{url}/readyz").json()["checks"]
        assert checks["redis"] == "ok" and checks["adapter_aliases"] == "redis"  # aliases read under its user
        spec = {"task": "Answer about Acme.", "answer_format": "a word", "metric": {"type": "exact_match"}}
        assert httpx.put(f"{url}/v1/domains/acme", json=spec, headers=ADMIN).status_code == 201
        # What reached Redis went in under the orchestrator's user, not through the spool.
        assert httpx.get(f"{url}/readyz").json()["checks"]["log_backlog"] == 0

        trainer = Trainer(trainer_settings(weak, strong, trainer_url, k_drafts=2))
        try:
            await trainer.collector.ensure_groups()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until both entries are read, processed and acknowledged
                await trainer.collector.poll(block_ms=100)
                groups = await trainer.redis.xinfo_groups(redis_keys.TRACES_STREAM)
                if groups[0]["pending"] == 0 and groups[0]["lag"] == 0:
                    break
            assert groups[0]["pending"] == 0 and groups[0]["lag"] == 0, groups
            await set_active_adapter(trainer.redis, "general", "general-v1", history="push")
            await set_active_adapter(trainer.redis, "general", None, history="pop")
        finally:
            await trainer.aclose()
            await trainer.redis.aclose()

    orch = redis.Redis.from_url(orch_url)
    for refused in (
        lambda: orch.xreadgroup("cowest-trainer", "x", {redis_keys.TRACES_STREAM: ">"}),  # the trainer's
        lambda: orch.hgetall(redis_keys.pending_pairs("general")),  # the trainer's pairs
        lambda: orch.set(redis_keys.active_adapter("general"), "evil-v1"),  # adapters are the trainer's
        lambda: orch.flushall(),
        lambda: orch.keys("*"),
    ):
        with pytest.raises(NoPermissionError):
            refused()
    trainer_client = redis.Redis.from_url(trainer_url)
    for refused in (
        lambda: trainer_client.flushall(),
        lambda: trainer_client.config_get("*"),
        lambda: trainer_client.set("other-app:key", "x"),  # outside the project's prefixes
    ):
        with pytest.raises(NoPermissionError):
            refused()
    # Settings are printed and logged: an ACL password in the Redis URL must not be.
    assert PASSWORDS["orchestrator"] not in repr(settings) and PASSWORDS["orchestrator"] not in str(settings.endpoints)
