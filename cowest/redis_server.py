"""Redis for the stack: use the one at REDIS_URL when it answers, else start (and install) our own."""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlparse

import redis

from cowest.processes import ProcessRecord, ProcessTable, StackError
from shared.config import CowestSettings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def redis_server_binary(report=lambda msg: None) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(
            "redis-server is not installed and this user is not root, so it cannot be installed: "
            "run `sudo apt-get install redis-server`, or set REDIS_URL to a running Redis."
        )
    report("installing redis-server (Debian package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "redis-server"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-800:]}")
    found = shutil.which("redis-server")
    if not found:
        raise StackError("apt-get installed redis-server but it is not on PATH")
    return found


def start_redis(settings: CowestSettings, table: ProcessTable, report=lambda msg: None) -> ProcessRecord:
    """Start a private redis-server for settings.redis_url (which must point at this machine)."""
    url = urlparse(settings.redis_url)
    if url.hostname not in LOCAL_HOSTS:
        raise StackError(
            f"Redis at {settings.redis_url} does not answer and is not on this machine: start it, "
            "or point REDIS_URL at a local port and `cowest up` will run one there."
        )
    data_dir = settings.home_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = url.port or 6379
    # Append-only persistence: the feedback log must survive a restart of this Redis, and a crash of it. fsync
    # `always`: Redis answers a write only once it is on disk (a barrier in its event loop, one fsync per loop
    # turn for every client). With `everysec` an acknowledged write can be lost when the process dies: under disk
    # pressure Redis postpones the write itself up to 2 s, and replies meanwhile (the chaos test lost a trace and
    # its feedback that way once, Redis SIGKILLed on a busy CI machine).
    argv = [
        redis_server_binary(report),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    return table.start("redis", argv, {}, port=port, model=None)
