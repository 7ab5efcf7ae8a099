"""Metrics against hand-computed cases."""

from __future__ import annotations

import pytest

from shared.metrics import bootstrap_ci, exact_match, first_label, macro_f1, normalize, token_f1


def test_normalisation_is_squad_style():
    assert normalize("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert normalize("An apple a day") == "apple day"


@pytest.mark.parametrize(
    "pred,refs,em,f1",
    [
        ("fixed exchange rate system", ["fixed exchange rate system"], 1.0, 1.0),
        ("Reasoning.\nAnswer: a fixed rate", ["fixed exchange rate system"], 0.0, 2 * (2 / 2) * (2 / 4) / (1 + 2 / 4)),
        ("floating", ["fixed", "floating"], 1.0, 1.0),  # best over acceptable answers
        ("nothing in common", ["fixed"], 0.0, 0.0),
    ],
)
def test_em_and_f1(pred, refs, em, f1):
    assert exact_match(pred, refs) == em
    assert token_f1(pred, refs) == pytest.approx(f1)


def test_macro_f1_by_hand():
    golds = ["yes", "yes", "no", "maybe"]
    preds = ["yes", "no", "no", None]  # None: the answer named no label
    # yes: tp1 fp0 fn1 -> 2/3; no: tp1 fp1 fn0 -> 2/3; maybe: tp0 -> 0
    assert macro_f1(preds, golds) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_macro_f1_with_a_class_absent_from_gold_and_predictions():
    # "maybe" never occurs: it must not drag the average down
    assert macro_f1(["yes", "no"], ["yes", "no"]) == 1.0
    # a predicted class absent from gold counts (its F1 is 0)
    # yes: tp0 -> 0; no: tp1 fp0 fn0 -> 1; maybe: tp0 -> 0
    assert macro_f1(["maybe", "no"], ["yes", "no"]) == pytest.approx(1 / 3)


def test_first_label():
    assert first_label("Answer: Wrong, clearly", ("acceptable", "wrong")) == "wrong"
    assert first_label("I cannot say", ("acceptable", "wrong")) is None


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_ci(values) == (lo, hi)
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)
