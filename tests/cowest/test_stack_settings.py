"""The stack hands each service typed settings; a service process rebuilds exactly those from its environment."""

from __future__ import annotations

from pydantic import SecretStr

from cowest.stack import Stack, settings_env
from services.orchestrator.config import OrchestratorSettings
from services.trainer.config import TrainerSettings
from shared.config import CowestSettings, Endpoints


def test_endpoints_survive_the_trip_through_the_environment(monkeypatch):
    sent = Endpoints(
        weak_url="http://10.0.0.5:9001",
        weak_model="w",
        strong_url="https://api.example.com/v1/",
        strong_model="s",
        strong_api_key=SecretStr("sk-test"),
        redis_url="redis://10.0.0.6:6379/2",
    )
    assert sent.weak_url == "http://10.0.0.5:9001/v1" and sent.strong_url == "https://api.example.com/v1"
    for key, value in settings_env(sent).items():
        monkeypatch.setenv(key, value)
    received = OrchestratorSettings().endpoints
    assert received == sent and TrainerSettings().endpoints == sent
    assert received.weak_roots == ["http://10.0.0.5:9001"] and received.strong_key() == "sk-test"


def test_the_stack_points_both_services_at_its_own_servers(monkeypatch, tmp_path):
    monkeypatch.delenv("COWEST_STRONG_URL", raising=False)
    stack = Stack(CowestSettings(home=tmp_path, redis_url="redis://127.0.0.1:6390/0"))
    orch, trainer = stack.orchestrator_settings("tiny"), stack.trainer_settings("tiny")
    assert orch.endpoints == trainer.endpoints
    assert (orch.endpoints.weak_model, orch.endpoints.strong_model) == ("tiny-weak", "tiny-strong")
    assert orch.endpoints.weak_url == f"{stack.servers['weak'].base_url}/v1"
    assert trainer.base_model_dir == tmp_path.resolve() / "models" / "tiny-weak"
    env = stack.service_env(trainer, "endpoints", "base_model_dir")
    assert env["COWEST_REDIS_URL"] == "redis://127.0.0.1:6390/0" and env["COWEST_HOME"] == str(tmp_path)


def test_an_external_strong_endpoint_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("COWEST_STRONG_URL", "https://api.example.com/v1")
    monkeypatch.setenv("COWEST_STRONG_MODEL", "big-model")
    stack = Stack(CowestSettings(home=tmp_path))
    assert stack.external_strong
    ends = stack.orchestrator_settings("default").endpoints
    assert (ends.strong_url, ends.strong_model) == ("https://api.example.com/v1", "big-model")


def test_the_trainer_sends_the_embedded_strong_server_no_more_than_it_serves_in_time(monkeypatch, tmp_path):
    """8 cold requests in flight to the one-core 1.5B strong server ran past the read timeout and degraded."""
    monkeypatch.delenv("COWEST_STRONG_URL", raising=False)
    monkeypatch.delenv("COWEST_TRAINER_CONCURRENCY", raising=False)
    trainer = Stack(CowestSettings(home=tmp_path)).trainer_settings("default")
    assert trainer.concurrency == 2
    for key, value in Stack(CowestSettings(home=tmp_path)).service_env(trainer, "concurrency").items():
        monkeypatch.setenv(key, value)
    assert TrainerSettings().concurrency == 2  # what the trainer process reads
    monkeypatch.setenv("COWEST_TRAINER_CONCURRENCY", "5")
    assert Stack(CowestSettings(home=tmp_path)).trainer_settings("default").concurrency == 5  # the user's word wins
    monkeypatch.delenv("COWEST_TRAINER_CONCURRENCY")
    monkeypatch.setenv("COWEST_STRONG_URL", "https://api.example.com/v1")
    monkeypatch.setenv("COWEST_STRONG_MODEL", "big-model")
    assert Stack(CowestSettings(home=tmp_path)).trainer_settings("default").concurrency == 8  # a hosted API


def test_status_never_prints_a_redis_password():
    from cowest.stack import redacted

    assert redacted("redis://trainer:s3cret@10.0.0.6:6379/0") == "redis://trainer:***@10.0.0.6:6379/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_every_service_setting_survives_the_trip_through_the_environment(monkeypatch, tmp_path):
    """Lists too: COWEST_TRAINER_DOMAINS=a,b failed to parse (pydantic-settings wanted JSON)."""
    orch = OrchestratorSettings(domains=["general", "acme"], spool_path=tmp_path / "s.jsonl", alias_refresh_s=2.5)
    trainer = TrainerSettings(domains=["general", "acme"], adapters_dir=tmp_path / "a", k_drafts=3)
    for settings in (orch, trainer):
        for key, value in settings_env(settings).items():
            monkeypatch.setenv(key, value)
        assert type(settings)() == settings


def test_what_the_environment_sets_wins_over_the_local_stack(monkeypatch, tmp_path):
    """The CLI inside a deployment's container (compose, Kubernetes) reaches that deployment's servers: the
    compose smoke's `cowest sft` looked for a weak server on 127.0.0.1 before this."""
    monkeypatch.setenv("COWEST_WEAK_URL", "http://weak:8001/v1")
    monkeypatch.setenv("COWEST_WEAK_API_KEY", "sk-weak")
    monkeypatch.setenv("COWEST_REDIS_URL", "redis://default:pw@redis:6379/0")
    monkeypatch.delenv("COWEST_STRONG_URL", raising=False)
    stack = Stack(CowestSettings(home=tmp_path))
    ends = stack.trainer_settings("tiny").endpoints
    assert ends.weak_roots == ["http://weak:8001"] and ends.weak_key() == "sk-weak"
    assert ends.redis_url == "redis://default:pw@redis:6379/0"
    assert ends.strong_url == f"{stack.servers['strong'].base_url}/v1"  # not set: the stack's own
