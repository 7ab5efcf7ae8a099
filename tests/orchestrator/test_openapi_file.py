"""The committed OpenAPI schema (openapi/orchestrator.json, for clients in other languages) is the code's, and the
typed Python client reads only fields the schema has."""

from __future__ import annotations

import json
from pathlib import Path

from cowest_client import Collaboration, FeedbackReceipt, ModelCard, StageInfo
from services.orchestrator.openapi import schema_text

COMMITTED = Path(__file__).parents[2] / "openapi" / "orchestrator.json"


def test_the_committed_schema_matches_the_code():
    assert COMMITTED.read_text() == schema_text(), "the API changed: run `make openapi` and commit the file"


def test_the_client_models_read_fields_the_server_sends():
    components = json.loads(schema_text())["components"]["schemas"]
    for model, component in (
        (Collaboration, "CollaborateResponse"),
        (StageInfo, "StageInfo"),
        (FeedbackReceipt, "FeedbackResponse"),
        (ModelCard, "ModelCard"),
    ):
        missing = set(model.model_fields) - set(components[component]["properties"])
        assert not missing, f"{model.__name__} reads {missing}, which {component} does not have"
