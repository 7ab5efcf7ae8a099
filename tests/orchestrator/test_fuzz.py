"""Fuzz (issue 11): schemathesis generates valid and invalid requests for every route in the orchestrator's and
the trainer's OpenAPI schemas (positive and negative modes, stateful collaborate -> feedback links included)
and the run fails on any 5xx, any status the schema does not document, and any body or content type (stream
events included) that does not match it. The model servers are fakes (the run is about input handling) and Redis
is real. Each run is capped at 90 s (thousands of generated requests; CI's time is the limit)."""

from __future__ import annotations

import json
import subprocess

import pytest

from services.orchestrator.app import create_app as create_orchestrator
from services.trainer.app import create_app as create_trainer
from shared.config import REPO_ROOT
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import free_port, serve_app
from tests.support.settings import ADMIN_KEY, orch_settings, trainer_settings

SCHEMATHESIS = str(REPO_ROOT / ".venv" / "bin" / "schemathesis")
pytestmark = pytest.mark.slow


# Beyond "no 5xx": every status must be one the schema documents, with the documented content type and body.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def fuzz(
    schema_url: str, base_url: str, *headers: str, examples: int = 40, max_time: int = 90
) -> subprocess.CompletedProcess:
    argv = [
        SCHEMATHESIS,
        "run",
        schema_url,
        "--url",
        base_url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        "11",
        "--request-timeout",
        "30",
        "--max-time",
        str(max_time),
        "--workers",
        "1",
        "--suppress-health-check",
        "all",
    ]
    for header in headers:
        argv += ["--header", header]
    return subprocess.run(argv, capture_output=True, text=True, timeout=400)


def test_the_orchestrator_never_answers_5xx_to_generated_requests(private_redis, tmp_path):
    with (
        fake_upstream("tiny-weak", ["ok"], "Draft. Answer: x") as (weak, _),
        fake_upstream("tiny-strong", ["ok"], "Answer: x") as (strong, _),
    ):
        settings = orch_settings(weak, strong, private_redis.url, tmp_path / "spool.jsonl", docs=True)
        with serve_app(create_orchestrator(settings)) as url:
            run = fuzz(f"{url}/openapi.json", url, f"Authorization: Bearer {ADMIN_KEY}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_the_trainer_never_answers_5xx_to_generated_requests(private_redis, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    settings = trainer_settings(down, down, private_redis.url, adapters_dir=tmp_path / "adapters")
    app = create_trainer(settings)
    app.openapi_url = "/openapi.json"  # the trainer serves no schema; the test reads it from the app
    with serve_app(app) as url:
        schema = tmp_path / "trainer-openapi.json"
        schema.write_text(json.dumps(app.openapi()))
        run = fuzz(str(schema), url, f"Authorization: Bearer {ADMIN_KEY}", examples=25)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
