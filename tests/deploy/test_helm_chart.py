"""The Helm chart's templates (deploy/check.sh renders and validates them with helm): the orchestrator's spool
survives its pod (a claim per pod, not an emptyDir), client keys are required, and each service reaches Redis as
its own user (issue 20, defects 7 and 13)."""

from __future__ import annotations

from pathlib import Path

import yaml

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "cowest"
ORCHESTRATOR = (CHART / "templates" / "orchestrator.yaml").read_text()
TRAINER = (CHART / "templates" / "trainer.yaml").read_text()
HELPERS = (CHART / "templates" / "_helpers.tpl").read_text()


def test_the_orchestrator_spool_is_a_claim_per_pod_not_an_empty_dir():
    assert "kind: StatefulSet" in ORCHESTRATOR and "kind: Deployment" not in ORCHESTRATOR
    assert "volumeClaimTemplates:" in ORCHESTRATOR and "name: spool" in ORCHESTRATOR
    assert "emptyDir:" not in ORCHESTRATOR


def test_client_keys_are_required_and_each_service_has_its_own_redis_user():
    assert "key: api-keys}" in ORCHESTRATOR  # a secretKeyRef without optional: the pod needs it
    assert "key: redis-url-orchestrator}" in ORCHESTRATOR and "key: redis-url-trainer}" in TRAINER
    assert "redis-url}" not in HELPERS  # no shared credential left
    secrets = yaml.safe_load((CHART / "values.yaml").read_text())["secrets"]
    assert {"apiKeys", "redisUrlOrchestrator", "redisUrlTrainer"} <= set(secrets) and "redisUrl" not in secrets
