"""Who may do what (issue 11, defect 2): every trainer route but /healthz and the orchestrator's domain
registration need the admin key, a client key is not enough, no key configured means disabled (403), names
that could reach the filesystem or a Redis key are refused, and neither service publishes its API map."""

from __future__ import annotations

import httpx
import pytest

from services.orchestrator.app import create_app as create_orchestrator
from services.trainer.app import create_app as create_trainer
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import free_port, serve_app
from tests.support.settings import ADMIN, orch_settings, trainer_settings

TRAINER_ROUTES = [
    ("GET", "/status", None),
    ("GET", "/adapters", None),
    ("POST", "/train", {"domain": "authz"}),
    ("POST", "/feedback/build", {"domain": "authz", "items": [{"question": "q?", "answer": "a"}], "limit": 0}),
    ("POST", "/adapters/authz/rollback", None),
]
WRONG = {"Authorization": "Bearer not-the-key"}


@pytest.fixture(scope="module")
def trainer(private_redis):
    down = f"http://127.0.0.1:{free_port()}"
    with serve_app(create_trainer(trainer_settings(down, down, private_redis.url))) as url:
        yield url


@pytest.mark.parametrize("method,path,body", TRAINER_ROUTES)
def test_every_trainer_route_needs_the_admin_key(trainer, method, path, body):
    for headers in ({}, WRONG, {"Authorization": "Basic dGVzdC1hZG1pbi1rZXk="}):
        assert httpx.request(method, f"{trainer}{path}", json=body, headers=headers).status_code == 401
    allowed = httpx.request(method, f"{trainer}{path}", json=body, headers=ADMIN, timeout=60)
    assert allowed.status_code not in (401, 403), allowed.text
    assert httpx.get(f"{trainer}/healthz").status_code == 200  # liveness stays open


def test_no_admin_key_configured_disables_the_trainer_api(private_redis):
    down = f"http://127.0.0.1:{free_port()}"
    with serve_app(create_trainer(trainer_settings(down, down, private_redis.url, admin_key=None))) as url:
        assert httpx.get(f"{url}/status", headers=ADMIN).status_code == 403


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/train", {"domain": "../../etc"}),
        ("POST", "/train", {"domain": "a:b"}),
        ("POST", "/train", {"domain": "/abs"}),
        ("POST", "/feedback/build", {"domain": "x/../../y", "items": [{"question": "q", "answer": "a"}]}),
        ("POST", "/adapters/a:b/rollback", None),
        ("POST", "/adapters/..%2F..%2Fetc/rollback", None),
    ],
)
def test_names_that_could_reach_paths_or_keys_are_refused(trainer, method, path, body):
    r = httpx.request(method, f"{trainer}{path}", json=body, headers=ADMIN)
    assert r.status_code in (404, 422), r.text


def test_neither_service_publishes_its_api_map(trainer, private_redis, tmp_path):
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(f"{trainer}{path}").status_code == 404
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        with serve_app(create_orchestrator(orch_settings(weak, strong, private_redis.url, tmp_path / "s"))) as url:
            assert httpx.get(f"{url}/openapi.json").status_code == 404 and httpx.get(f"{url}/docs").status_code == 404


def test_registering_a_domain_needs_the_admin_key_not_a_client_key(private_redis, tmp_path):
    spec = {"task": "Answer about Acme.", "answer_format": "a word", "metric": {"type": "exact_match"}}
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        settings = orch_settings(weak, strong, private_redis.url, tmp_path / "s", api_keys=["client-key"])
        with serve_app(create_orchestrator(settings)) as url:
            client = {"Authorization": "Bearer client-key"}
            assert httpx.put(f"{url}/v1/domains/authz", json=spec).status_code == 401
            assert httpx.put(f"{url}/v1/domains/authz", json=spec, headers=client).status_code == 401
            assert httpx.put(f"{url}/v1/domains/authz", json=spec, headers=ADMIN).status_code in (200, 201)
            assert httpx.get(f"{url}/v1/domains/authz", headers=client).status_code == 200  # reading: a client key
            assert httpx.get(f"{url}/v1/domains/authz", headers=ADMIN).status_code == 401  # not an admin's


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route in an app's table, path parameters filled with harmless names."""
    from fastapi.routing import APIRoute

    fill = {"domain": "authz", "name": "authz", "decision": "promote"}
    return [
        (method, route.path.format(**fill))
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
    ]


def test_every_trainer_route_in_its_route_table_needs_the_admin_key(trainer, private_redis):
    """Generated from the route table: a route added without the admin key fails here (issue 20)."""
    open_routes = {("GET", "/healthz"), ("GET", "/metrics")}  # liveness and numbers only
    down = f"http://127.0.0.1:{free_port()}"
    routes = _routes(create_trainer(trainer_settings(down, down, private_redis.url)))
    assert len(routes) > len(TRAINER_ROUTES)
    for method, path in routes:
        status = httpx.request(method, f"{trainer}{path}", headers=WRONG).status_code
        assert status == 200 if (method, path) in open_routes else status == 401, (method, path, status)


def test_every_orchestrator_route_in_its_route_table_needs_a_key(private_redis, tmp_path):
    """With client keys set, every orchestrator route but health and metrics refuses a request without one; the
    admin routes refuse a client key too."""
    open_routes = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        settings = orch_settings(weak, strong, private_redis.url, tmp_path / "s", api_keys=["client-key"])
        app = create_orchestrator(settings)
        routes = _routes(app)
        with serve_app(app) as url:
            for method, path in routes:
                status = httpx.request(method, f"{url}{path}", json={}).status_code
                if (method, path) in open_routes:
                    assert status == 200, (method, path, status)
                else:
                    assert status == 401, (method, path, status)
