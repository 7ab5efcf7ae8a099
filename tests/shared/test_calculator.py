import pytest

from shared import calculator
from shared.domains import get


@pytest.mark.parametrize(
    "expression, value",
    [
        ("floor(3300 * 1000 / ((440 + 60) * 150))", 44),
        ("round(2 * 54 / 36 * 60)", 180),
        ("440 x 150", 66000),
        ("1,250 + 3", 1253),
        ("max(3, 7) - min(2, 5)", 5),
        ("`12 ÷ 4`.", 3),
    ],
)
def test_evaluates_the_arithmetic_models_write(expression, value):
    assert calculator.evaluate(expression).value == value


@pytest.mark.parametrize(
    "expression",
    ["none", "", "__import__('os').system('true')", "open('/etc/passwd')", "2 > 1", "9 ** 9 ** 9", "x + 1", "1 / 0"],
)
def test_refuses_anything_but_a_number(expression):
    result = calculator.evaluate(expression)
    assert result.value is None and result.error


def test_the_calc_value_replaces_the_answers_number_and_nothing_else():
    reply = (
        "Work: 500 residents, 150 litres each, 3300 kilolitres.\nCalc: floor(3300000 / (500 * 150))\nAnswer: 40 days"
    )
    text, calc = calculator.apply(reply)
    assert text == reply.replace("40 days", "44 days") and calc is not None and calc.value == 44


@pytest.mark.parametrize(
    "reply, answer",
    [
        (
            "Work: Mosorrness and Lumkelsund have 1612 + 1516 = 3028 residents.\nCalc: none\nAnswer: 3028 residents",
            "3128",
        ),
        ("Work: 1,050 + 210 = 1,250.\nAnswer: 1,250 residents", "1260"),  # no Calc line at all
        ("Work: 500 x 150 = 70000 litres a day.\nCalc: n/a\nAnswer: 70000 litres", "75000"),
    ],
)
def test_a_sum_worked_out_in_words_is_recomputed_when_there_is_no_calc(reply, answer):
    """The 1.5B strong model wrote `Calc: none` for every sum of two settlements' residents and added in its head."""
    text, calc = calculator.apply(reply)
    assert text.splitlines()[-1].split()[1] == answer and calc is not None and calc.value == float(answer)


@pytest.mark.parametrize(
    "reply",
    [
        "Work: A lasts 45 days, B 28.\nCalc: none\nAnswer: Zephness",  # a name keeps the model's words
        "Work: ...\nCalc: 2 > 1\nAnswer: 7 days",  # no number: the model's answer stands
        "Work: ...\nAnswer: 7 days",  # no Calc line, no equation
        "Work: 8952000 / (172 x 150) = 17 days.\nCalc: none\nAnswer: 17 days",  # a division's rounding is the model's
        "Work: 6989000 / 1612 = 21.0 hours; 21.0 x 60 = 1260 minutes.\nCalc: none\nAnswer: 1260 minutes",  # decimal
        "Work: 2 + 2 = 5, and 3 x 3 = 9.\nCalc: none\nAnswer: 9 pens",  # right, and not the wrong sum's result
    ],
)
def test_replies_the_calculator_cannot_improve_are_unchanged(reply):
    assert calculator.apply(reply)[0] == reply


def test_the_islands_demonstrations_compute_their_own_answers():
    """A demonstration whose Calc line disagrees with its answer would teach the strong model a wrong tool use."""
    spec = get("islands")
    assert spec.calculator
    for demo in spec.demonstrations:
        reply = f"Work: {demo.work}\nCalc: {demo.calc}\nAnswer: {demo.answer}"
        assert calculator.apply(reply)[0] == reply
        assert demo.answer.split()[0] not in demo.draft.splitlines()[-1]  # each shows a corrected draft
