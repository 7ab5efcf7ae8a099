"""The strong stage's calculator (a domain's `calculator: true`): the strong model writes its computation as one
arithmetic expression on a `Calc:` line, a safe evaluator (`simpleeval`, never `eval`) computes it, and the value
replaces the number on the `Answer:` line. A reply without a usable Calc line whose own words work out the answer
as a sum or product of whole numbers gets that equation recomputed.

Why: the models this machine runs copy a draft's arithmetic or redo it wrongly (a 1.5B model read "3300000 / 75000"
and wrote 40); choosing the facts and the operations is the reasoning, computing them is a tool's job. It is the
same tool a hosted model gets through function calling, done in one request so that any OpenAI-compatible endpoint
can serve it. Serving, feedback, the gate and evaluation all apply it in `Collaboration.refine`, to the strong
model alone (with or without retrieval) as to the collaboration, so every row compared has the same tool.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from simpleeval import SimpleEval

__all__ = ["ANSWER_START", "Calculation", "apply", "evaluate"]

_CALC_LINE = re.compile(r"^[ \t*]*Calc:[ \t*]*(?P<expr>.*?)[ \t]*$", re.M | re.I)
_ANSWER_LINE = re.compile(r"^(?P<head>[ \t*]*Answer:[ \t*]*)(?P<answer>.*?)[ \t]*$", re.M | re.I)
ANSWER_START = re.compile(r"^[ \t*]*Answer:", re.M | re.I)  # where a reply's answer line begins
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FUNCTIONS = {"floor": math.floor, "ceil": math.ceil, "round": round, "min": min, "max": max, "abs": abs}
# "1612 + 1516 = 3028": whole numbers (not part of a decimal) joined by + - x * and the result the model stated.
_EQUATION = re.compile(
    r"(?<![\d.,])(?P<expr>\d[\d,]*(?:[ \t]*[-+x×*][ \t]*\d[\d,]*)+)(?![\d.])"
    r"[ \t]*=[ \t]*(?P<stated>-?\d[\d,]*(?:\.\d+)?)"
)
MAX_EXPRESSION = 300  # characters: one calculation, not a program


@dataclass(frozen=True)
class Calculation:
    """What the calculator did with a reply: the expression, its value (None: it did not evaluate) and why not."""

    expression: str
    value: float | None
    error: str | None = None


def _normalise(expression: str) -> str:
    """Models write `x`, `×`, `÷` and thousands separators; the evaluator wants Python operators."""
    expression = expression.strip().rstrip(".").strip("` ")
    expression = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expression)
    return re.sub(r"(?<=[\d)])\s*[x×]\s*(?=[\d(])", " * ", expression).replace("÷", "/").replace("^", "**")


def evaluate(expression: str) -> Calculation:
    """The value of one arithmetic expression (+ - * / // % **, parentheses, floor, ceil, round, min, max, abs)."""
    text = _normalise(expression)
    if not text or text.lower() in {"none", "n/a", "-"}:
        return Calculation(expression, None, "no calculation")
    if len(text) > MAX_EXPRESSION:
        return Calculation(expression, None, f"longer than {MAX_EXPRESSION} characters")
    try:
        value = SimpleEval(functions=_FUNCTIONS, names={}).eval(text)
    except Exception as exc:  # noqa: BLE001 -- simpleeval raises many kinds; any of them means "no value"
        return Calculation(expression, None, f"{type(exc).__name__}: {exc}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return Calculation(expression, None, f"not a number: {value!r}")
    return Calculation(expression, float(value))


def _format(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return str(round(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _number(text: str) -> float | None:
    match = _NUMBER.search(text)
    return float(match.group().replace(",", "")) if match else None


def _written_equation(reply: str, answer: float) -> Calculation | None:
    """The last sum or product the reply worked out in words ("1612 + 1516 = 3028") whose result is the answer's
    number, recomputed. Only whole numbers joined by + - x *: exact, so recomputing can fix an addition done in
    the model's head and never changes a rounding the model chose (a division's)."""
    found = None
    for m in _EQUATION.finditer(reply):
        if (stated := _number(m.group("stated"))) is not None and abs(stated - answer) < 1e-9:
            found = m
    if found is None:
        return None
    result = evaluate(found.group("expr"))
    return result if result.value is not None else None


def apply(reply: str) -> tuple[str, Calculation | None]:
    """`reply` with its answer's number replaced by the value of its `Calc:` line, or, when that line is missing or
    says none, by the recomputed equation that produced the answer's number (`_written_equation`). The reply is
    unchanged when nothing evaluates or its answer has no number (a name or yes/no keeps the model's words)."""
    calc = _CALC_LINE.search(reply)
    result = evaluate(calc.group("expr")) if calc else None
    answers = list(_ANSWER_LINE.finditer(reply))
    answer = _number(answers[-1].group("answer")) if answers else None
    if answer is None:
        return reply, result
    if result is None or result.value is None:
        # The model wrote `Calc: none` (or no Calc line) and added in its head: measured on islands training
        # questions, the 1.5B model did so for every sum of two settlements' residents, even after a demonstration.
        result = _written_equation(reply[: answers[-1].start()], answer) or result
    if result is None or result.value is None:
        return reply, result
    last = answers[-1]
    new_answer = _NUMBER.sub(_format(result.value), last.group("answer"), count=1)
    return reply[: last.start("answer")] + new_answer + reply[last.end("answer") :], result
