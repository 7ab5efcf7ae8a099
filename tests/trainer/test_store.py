"""The trainer's Redis state: the held-out split is by question, so one question never lands on both
sides (gate and training) however often it is asked."""

from __future__ import annotations

from redis.asyncio import Redis

from services.trainer.store import Item, TrainerStore, is_heldout, question_key


def test_split_is_by_normalised_question_and_domain():
    assert question_key("d", "What is  X?") == question_key("d", "what is x?")
    assert question_key("d", "What is X?") != question_key("e", "What is X?")
    share = sum(is_heldout("d", f"question {i}") for i in range(2000)) / 2000
    assert 0.15 < share < 0.25  # about every 5th question


async def test_a_question_asked_twice_is_one_gate_item(private_redis):
    redis = Redis.from_url(private_redis.url)
    store = TrainerStore(redis)
    question = next(f"question {i}" for i in range(100) if is_heldout("gatekeeping", f"question {i}"))
    try:
        for trace in ("trace-1", "trace-2"):  # two traces (two rounds, two users), same question
            await store.add_heldout(Item(id=trace, domain="gatekeeping", question=question, answer="a"))
        assert [i.question for i in await store.heldout("gatekeeping")] == [question]
    finally:
        await redis.delete("cowest:heldout:gatekeeping")
        await redis.aclose()
