"""A small typed client of CoWest Serve's own API, for product teams calling it from Python services.

    from cowest_client import CowestClient
    client = CowestClient()  # COWEST_URL (default http://127.0.0.1:8000), COWEST_API_KEY
    answer = client.collaborate("Which plan includes SSO?", domain="company")
    client.feedback(answer.id, score=1.0)

`AsyncCowestClient` is the same with `await`. Every call has a timeout, sends an `X-Request-ID` (yours or a new
one), and retries what is worth retrying (429 and 502/503/504, connection failures and timeouts) with
exponential backoff that honours the server's `Retry-After`. Errors arrive as `CowestError` with the OpenAI
error object's fields and the request id to quote in a bug report. Needs only httpx, pydantic and tenacity.

For the OpenAI-compatible `/v1/chat/completions`, use the official `openai` client with `base_url=<COWEST_URL>/v1`.
Other languages: generate a client from `openapi/orchestrator.json` (kept equal to the code by a test).
"""

from cowest_client.client import AsyncCowestClient, CowestClient, CowestError
from cowest_client.models import Collaboration, FeedbackReceipt, ModelCard, StageInfo

__all__ = [
    "AsyncCowestClient",
    "Collaboration",
    "CowestClient",
    "CowestError",
    "FeedbackReceipt",
    "ModelCard",
    "StageInfo",
]
