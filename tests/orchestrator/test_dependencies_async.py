"""Every endpoint and dependency of both services' routes is `async def`: FastAPI runs a plain `def` one in its
thread pool, a thread hand-off per dependency and request (making them async cut the orchestrator's overhead by 15% and
its concurrent p50 by half: bench/results/orchestrator_overhead.md)."""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute

from services.orchestrator.app import create_app as create_orchestrator
from services.trainer.app import create_app as create_trainer
from tests.support.settings import orch_settings, trainer_settings


def sync_dependencies(app) -> list[str]:
    found = []

    def walk(dependant, route: str) -> None:
        for dep in dependant.dependencies:
            if dep.call is not None and not inspect.iscoroutinefunction(dep.call):
                found.append(f"{route}: {dep.call.__name__}")
            walk(dep, route)

    for route in app.routes:
        if isinstance(route, APIRoute):
            if not inspect.iscoroutinefunction(route.endpoint):
                found.append(f"{route.path}: {route.endpoint.__name__} (the endpoint)")
            walk(route.dependant, route.path)
    return found


def test_no_route_runs_its_endpoint_or_a_dependency_in_the_thread_pool(tmp_path):
    orch = create_orchestrator(orch_settings("http://w", "http://s", "redis://127.0.0.1:1/0", tmp_path / "s.jsonl"))
    trainer = create_trainer(trainer_settings("http://w", "http://s", "redis://127.0.0.1:1/0"))
    assert sync_dependencies(orch) == [] and sync_dependencies(trainer) == []
