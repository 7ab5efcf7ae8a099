"""The trainer's Redis state: the held-out split is by question, so one question never lands on both
sides (gate and training) however often it is asked."""

from __future__ import annotations

import asyncio

from services.trainer.pairs import PreferencePair
from services.trainer.store import TrainerStore, is_heldout, question_key
from shared import redis_keys
from shared.data.example import Example


def test_split_is_by_normalised_question_and_domain():
    assert question_key("d", "What is  X?") == question_key("d", "what is x?")
    assert question_key("d", "What is X?") != question_key("e", "What is X?")
    share = sum(is_heldout("d", f"question {i}") for i in range(2000)) / 2000
    assert 0.15 < share < 0.25  # about every 5th question


async def test_a_question_asked_twice_is_one_gate_item(private_redis):
    redis = redis_keys.connect(private_redis.url)
    store = TrainerStore(redis)
    question = next(f"question {i}" for i in range(100) if is_heldout("gatekeeping", f"question {i}"))
    try:
        for trace in ("trace-1", "trace-2"):  # two traces (two rounds, two users), same question
            await store.add_heldout(Example(id=trace, domain="gatekeeping", question=question, answer="a"))
        assert [i.question for i in await store.heldout("gatekeeping")] == [question]
    finally:
        await redis.delete("cowest:heldout:gatekeeping")
        await redis.aclose()


def _pair(domain: str, question: str, n: int = 0) -> PreferencePair:
    return PreferencePair(
        pair_id=f"{question}:{n}",
        domain=domain,
        round=1,
        question_id=question,
        prompt=[{"role": "user", "content": question}],
        chosen="good",
        rejected="bad",
        chosen_delta=1.0,
        rejected_delta=0.0,
        strong_alone_score=0.0,
        adapter=None,
    )


async def test_a_round_claims_exactly_its_pairs_and_later_pairs_wait_for_the_next(private_redis):
    redis = redis_keys.connect(private_redis.url)
    store, domain = TrainerStore(redis), "claiming"
    try:
        for q in ("q1", "q2"):
            assert await store.put_pairs(domain, q, [_pair(domain, q)])
        assert not await store.put_pairs(domain, "Q1 ", [_pair(domain, "q1", 1)])  # the same question: first wins
        claimed = await store.claim_pairs(domain, 1)
        assert sorted(p.question_id for p in claimed) == ["q1", "q2"]
        # Stored while round 1 trains: not in round 1, not lost, waiting for round 2.
        await store.put_pairs(domain, "q3", [_pair(domain, "q3")])
        assert sorted(p.question_id for p in await store.claimed_pairs(domain, 1)) == ["q1", "q2"]
        await store.next_round(domain)
        assert [p.question_id for p in await store.pending_pairs(domain)] == ["q3"]
        assert [p.question_id for p in await store.claim_pairs(domain, 2)] == ["q3"]
        assert await store.pending_pairs(domain) == await store.claimed_pairs(domain, 2)  # round 2 not finished
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(match=f"cowest:*:{domain}*")])
        await redis.aclose()


async def test_a_failed_round_keeps_its_claim_and_its_retry_adds_the_newer_pairs(private_redis):
    redis = redis_keys.connect(private_redis.url)
    store, domain = TrainerStore(redis), "retrying"
    try:
        await store.put_pairs(domain, "q1", [_pair(domain, "q1")])
        await store.claim_pairs(domain, 1)  # the round then fails: the counter stays at 1
        await store.put_pairs(domain, "q2", [_pair(domain, "q2")])
        assert sorted(p.question_id for p in await store.pending_pairs(domain)) == ["q1", "q2"]
        assert sorted(p.question_id for p in await store.claim_pairs(domain, 1)) == ["q1", "q2"]
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(match=f"cowest:*:{domain}*")])
        await redis.aclose()


async def test_claims_racing_with_writers_lose_and_duplicate_nothing(private_redis):
    redis = redis_keys.connect(private_redis.url)
    store, domain = TrainerStore(redis), "racing"
    questions = [f"question {i}" for i in range(300)]
    claimed: list[PreferencePair] = []

    async def writer(part: list[str]) -> None:
        for q in part:
            await store.put_pairs(domain, q, [_pair(domain, q)])

    async def claimer() -> None:
        for round_ in range(1, 40):
            claimed.extend(await store.claim_pairs(domain, round_))
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(writer(questions[i::4]) for i in range(4)), claimer())
        claimed.extend(await store.claim_pairs(domain, 99))
        ids = [p.question_id for p in claimed]
        assert sorted(ids) == sorted(questions)  # every pair in exactly one round
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(match=f"cowest:*:{domain}*")])
        await redis.aclose()
