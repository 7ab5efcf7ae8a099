from services.orchestrator.pipeline import _HeldAnswer


def test_a_streamed_reply_holds_back_its_answer_line_until_the_calc_line_is_computed():
    held = _HeldAnswer()
    chunks = ["Work: 2 islands", "\nCalc: 2 *", " 3\nAns", "wer: 5 da", "ys"]
    streamed = [held.add(c) for c in chunks]
    assert not any("Answer" in s for s in streamed)  # the model's own (wrong) number never goes out
    assert "".join(streamed) + held.finish() == "Work: 2 islands\nCalc: 2 * 3\nAnswer: 6 days"
    assert held.text == "Work: 2 islands\nCalc: 2 * 3\nAnswer: 6 days"


def test_a_reply_without_an_answer_line_streams_whole():
    held = _HeldAnswer()
    out = "".join(held.add(c) for c in ["just ", "text\nmore"]) + held.finish()
    assert out == "just text\nmore"


def test_a_streamed_sum_worked_out_in_words_gets_its_recomputed_answer():
    """No Calc line to wait for: the held Answer line still goes out recomputed, never with the model's sum."""
    held = _HeldAnswer()
    streamed = [
        held.add(c) for c in ["Work: 1612 + 1516 = 3028 residents.\nCalc: no", "ne\nAnswer: 30", "28 residents"]
    ]
    assert "Answer" not in "".join(streamed)
    assert held.finish().endswith("Answer: 3128 residents")
