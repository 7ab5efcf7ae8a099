"""The collaboration's modes and degraded paths (shared/collaboration.py) on in-memory model servers."""

from __future__ import annotations

import pytest

from shared.collaboration import Ask, Collaboration, CollaborationFailed, Limits
from tests.support.memory import ScriptedUpstream


def collaboration(
    weak_down=False, strong_down=False, fallback="draft"
) -> tuple[Collaboration, ScriptedUpstream, ScriptedUpstream]:
    weak = ScriptedUpstream("weak", "Falcon costs 149. Answer: 447", down=weak_down)
    strong = ScriptedUpstream("strong", "Answer: 447 euros", down=strong_down)
    limits = Limits(weak_max_tokens=64, strong_max_tokens=32, strong_fallback=fallback)
    return Collaboration(weak, strong, "weak-m", "strong-m", limits), weak, strong


def ask(**kw) -> Ask:
    return Ask(question="What do 3 Falcons cost?", domain="general", **kw)


async def test_collab_refines_the_draft_and_sends_it_to_the_strong_model():
    collab, weak, strong = collaboration()
    out = await collab.run(ask(adapter="acme-v2"))
    assert (out.answer, out.degraded, out.draft.adapter) == ("Answer: 447 euros", None, "acme-v2")
    assert weak.payloads[0]["model"] == "acme-v2" and weak.payloads[0]["max_tokens"] == 64
    assert strong.payloads[0]["max_tokens"] == 32
    assert "Falcon costs 149" in json_of(strong.payloads[0]["messages"])


async def test_weak_down_answers_with_the_strong_model_alone():
    collab, _, strong = collaboration(weak_down=True)
    out = await collab.run(ask())
    assert out.answer == "Answer: 447 euros" and out.degraded.startswith("weak_unavailable")
    assert "Falcon costs 149" not in json_of(strong.payloads[0]["messages"])


async def test_strong_down_answers_with_the_draft_or_fails_as_configured():
    collab, _, _ = collaboration(strong_down=True)
    out = await collab.run(ask())
    assert out.answer == "Falcon costs 149. Answer: 447" and out.degraded.startswith("strong_unavailable")
    strict, _, _ = collaboration(strong_down=True, fallback="error")
    with pytest.raises(CollaborationFailed) as failed:
        await strict.run(ask())
    assert failed.value.code == "strong_unavailable"


async def test_both_down_is_a_failure_that_names_both():
    collab, _, _ = collaboration(weak_down=True, strong_down=True)
    with pytest.raises(CollaborationFailed) as failed:
        await collab.run(ask())
    assert failed.value.code == "models_unavailable" and "weak" in str(failed.value) and "strong" in str(failed.value)


async def test_one_model_alone_and_a_given_draft():
    collab, weak, strong = collaboration()
    alone = await collab.run(ask(mode="strong"))
    assert alone.answer == "Answer: 447 euros" and not weak.payloads
    weak_only = await collab.run(ask(mode="weak"))
    assert weak_only.answer == "Falcon costs 149. Answer: 447" and len(strong.payloads) == 1
    await collab.run(ask(draft="The gold rationale."))
    assert len(weak.payloads) == 1 and "The gold rationale." in json_of(strong.payloads[-1]["messages"])


def json_of(messages: list[dict]) -> str:
    return " ".join(m["content"] for m in messages)


async def test_an_empty_draft_with_the_strong_model_down_names_the_strong_model():
    """Found by the chaos test: a weak model that drafted nothing, with the strong server down, was reported as
    "both model servers are unavailable" (models_unavailable), blaming a server that had answered."""
    collab, weak, _ = collaboration(strong_down=True)
    weak.text = ""
    with pytest.raises(CollaborationFailed) as failed:
        await collab.run(ask())
    assert failed.value.code == "strong_unavailable" and "draft is empty" in str(failed.value)
