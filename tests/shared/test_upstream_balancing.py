"""One Upstream over several replicas of a model server (COWEST_WEAK_URL / COWEST_STRONG_URL listing several base
URLs): round-robin over real HTTP servers, a refused replica skipped at once (no retry budget spent) and avoided
for a while, a 5xx retried on the other replica, streams balanced the same way."""

from __future__ import annotations

import socket

import pytest

from shared.config import Endpoints
from shared.upstream import Upstream, UpstreamError
from tests.support.fake_upstream import fake_upstream


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed


def upstream(urls: list[str], retries: int = 0) -> Upstream:
    joined = Endpoints(weak_url=",".join(urls)).weak_url  # the settings' own normalisation: /v1 on each
    return Upstream("weak", joined, timeout_s=5, connect_timeout_s=2, retries=retries, retry_max_wait_s=0.1)


async def test_requests_go_round_robin_over_the_replicas():
    with fake_upstream("m", ["ok"]) as (a, fa), fake_upstream("m", ["ok"]) as (b, fb):
        up = upstream([a, b])
        try:
            for _ in range(6):
                await up.chat({"model": "m", "messages": []})
        finally:
            await up.aclose()
    assert len(fa.calls) == len(fb.calls) == 3


async def test_a_refused_replica_is_skipped_without_a_retry_and_then_avoided():
    with fake_upstream("m", ["ok"]) as (a, fa):
        up = upstream([closed_url(), a], retries=0)
        try:
            for _ in range(5):
                assert (await up.chat({"model": "m", "messages": []}))["choices"]
            chunks = [c async for c in up.stream_chat({"model": "m", "messages": []})]
        finally:
            await up.aclose()
    assert len(fa.calls) == 6 and chunks


async def test_a_5xx_is_retried_on_the_other_replica():
    with fake_upstream("m", ["500"]) as (bad, fbad), fake_upstream("m", ["ok"]) as (good, fgood):
        up = upstream([bad, good], retries=1)
        try:
            for _ in range(4):
                await up.chat({"model": "m", "messages": []})
        finally:
            await up.aclose()
    assert len(fgood.calls) == 4 and fbad.calls  # every request answered: those that met the bad one went on


async def test_a_replica_without_the_model_passes_the_request_to_one_with_it():
    """Issue 20, defect 11: a replica that does not hold a LoRA version yet (skipped at the flip) answers 404 for
    it; the request goes to the next replica instead of failing the draft. A 404 from every replica still fails."""
    with fake_upstream("m", ["404"]) as (lacking, flacking), fake_upstream("m", ["ok"]) as (holding, fholding):
        up = upstream([lacking, holding], retries=0)
        try:
            for _ in range(4):
                assert (await up.chat({"model": "acme-v2", "messages": []}))["choices"]
        finally:
            await up.aclose()
    assert len(fholding.calls) == 4 and flacking.calls
    with fake_upstream("m", ["404"]) as (a, _), fake_upstream("m", ["404"]) as (b, _):
        up = upstream([a, b])
        try:
            with pytest.raises(UpstreamError) as info:
                await up.chat({"model": "acme-v2", "messages": []})
        finally:
            await up.aclose()
    assert info.value.status_code == 404


async def test_all_replicas_refusing_is_unreachable():
    up = upstream([closed_url(), closed_url()])
    try:
        with pytest.raises(UpstreamError) as info:
            await up.chat({"model": "m", "messages": []})
    finally:
        await up.aclose()
    assert info.value.kind == "unreachable"
