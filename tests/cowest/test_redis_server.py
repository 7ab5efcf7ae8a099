"""Redis decisions of `cowest up`: what is ours to start, clear errors, and the durability of the Redis it starts."""

from __future__ import annotations

import pytest

from cowest.processes import ProcessTable, StackError
from cowest.redis_server import redis_ping, start_redis
from shared.config import CowestSettings
from tests.support.servers import free_port


def test_ping_is_false_when_nothing_listens():
    assert redis_ping(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5) is False


def test_redis_elsewhere_that_does_not_answer_is_a_clear_error(tmp_path):
    """Only a Redis on this machine is ours to start (checked without connecting anywhere)."""
    settings = CowestSettings(home=tmp_path, redis_url="redis://redis.example.internal:6379/0")
    with pytest.raises(StackError, match="is not on this machine"):
        start_redis(settings, ProcessTable(tmp_path / "run"))


def test_missing_redis_server_without_root_is_a_clear_error(monkeypatch):
    from cowest import redis_server

    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_server.os, "geteuid", lambda: 1000)
    with pytest.raises(StackError, match="apt-get install redis-server.*or set REDIS_URL"):
        redis_server.redis_server_binary()


def test_the_stacks_redis_acknowledges_only_writes_on_disk(fresh_redis):
    """AOF with fsync `always`: with `everysec` Redis may answer a write it postponed, and a kill loses it."""
    client = fresh_redis.client()
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        client.close()
