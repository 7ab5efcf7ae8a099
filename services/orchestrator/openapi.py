"""The orchestrator's OpenAPI schema as a committed file, for clients in other languages:
`python -m services.orchestrator.openapi > openapi/orchestrator.json` (`make openapi`); a test keeps it equal to
the code."""

from __future__ import annotations

import json

from services.orchestrator.app import create_app
from services.orchestrator.config import OrchestratorSettings


def schema_text() -> str:
    app = create_app(OrchestratorSettings(_env_file=None))  # the defaults: no deployment's settings leak in
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
