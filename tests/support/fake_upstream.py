"""A scripted fake OpenAI-compatible upstream for the fault tests (429s, 500s, hangs), served on real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sse_starlette.sse import EventSourceResponse

from tests.support.servers import serve_app


class FakeUpstream:
    """A scripted OpenAI-compatible server. `script` lists what each chat call does, the last entry
    repeating: "ok", "429" (Retry-After: 1), "500", "hang", "garbage" (a 200 whose body is not JSON),
    "nullusage" (usage fields null), "badchunk" (a stream whose second chunk is not JSON), "drip" (a 200 that
    never ends: a byte of its body, or a token of its stream, every 0.3 s, so no read ever times out), "slow" (an
    "ok" after 2 s), "404" (the model is not loaded there)."""

    def __init__(self, model: str, script: list[str], text: str = "fake answer", extra_models: tuple[str, ...] = ()):
        self.model, self.script, self.text, self.extra_models = model, list(script), text, extra_models
        self.calls: list[dict] = []
        self.app = FastAPI()
        self.app.add_api_route("/v1/models", self._models, methods=["GET"])
        self.app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])

    async def _models(self):
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in (self.model, *self.extra_models)]}

    async def _chat(self, request: Request):
        body = await request.json()
        action = self.script[min(len(self.calls), len(self.script) - 1)]
        self.calls.append({"t": time.monotonic(), "action": action, "body": body, "headers": dict(request.headers)})
        if action == "429":
            return JSONResponse(
                {"error": {"message": "slow down", "type": "rate_limit_error"}}, 429, headers={"Retry-After": "1"}
            )
        if action == "500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if action == "404":  # vLLM's answer for a LoRA name it has not loaded
            message = f"The model `{body.get('model')}` does not exist."
            return JSONResponse({"error": {"message": message, "type": "NotFoundError"}}, 404)
        if action == "hang":
            await asyncio.sleep(60)
        if action == "slow":
            await asyncio.sleep(2)
        if action == "drip":

            async def drip():
                token = json.dumps({"choices": [{"index": 0, "delta": {"content": "x"}}]})
                if not body.get("stream"):
                    yield b'{"id": "x", "choices": '
                while True:
                    yield f"data: {token}\n\n".encode() if body.get("stream") else b" "
                    await asyncio.sleep(0.3)

            media = "text/event-stream" if body.get("stream") else "application/json"
            return StreamingResponse(drip(), media_type=media)
        if action == "garbage":
            return Response("<html>502 Bad Gateway</html>", 200, media_type="application/json")
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if action == "nullusage":
            usage = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
        if body.get("stream"):

            async def events():
                for i, word in enumerate(self.text.split()):
                    if action == "badchunk" and i == 1:
                        yield {"data": "{not json"}
                        return
                    yield {"data": json.dumps({"choices": [{"index": 0, "delta": {"content": word + " "}}]})}
                yield {"data": json.dumps({"choices": [], "usage": usage})}
                yield {"data": "[DONE]"}

            return EventSourceResponse(events())
        return {
            "id": "x",
            "object": "chat.completion",
            "model": self.model,
            "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.text}}],
        }


@contextmanager
def fake_upstream(
    model: str, script: list[str], text: str = "fake answer", extra_models: tuple[str, ...] = ()
) -> Iterator[tuple[str, FakeUpstream]]:
    fake = FakeUpstream(model, script, text, extra_models)
    with serve_app(fake.app) as url:
        yield url, fake
