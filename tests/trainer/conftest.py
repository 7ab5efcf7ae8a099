"""Trainer fixtures: reuse the orchestrator's real-HTTP helpers and private Redis."""

from tests.orchestrator.conftest import fresh_redis, private_redis  # noqa: F401 - fixtures
