"""Prompt templates of the collaboration, in one place: serving, collaborative feedback and
evaluation all build their messages here, so training sees exactly what serving sends.

CoWest inference is y* = strong(x, weak(x)): the weak model drafts (CoT by default: the paper's best
format), the strong model refines given the question and the draft. `strong_alone_messages` is the
baseline that collaborative feedback compares against (strong(x) without a draft). What a domain says
to the models (task, answer format, worked examples) is its spec (shared/domains.py).
"""

from __future__ import annotations

from string import Template

from shared.domains import DEFAULT_DOMAIN, Demonstration, DomainSpec, DraftFormat, get
from shared.knowledge import Lookup

__all__ = ["DEFAULT_DOMAIN", "DraftFormat", "get_domain", "strong_alone_messages", "strong_messages", "weak_messages"]

_DRAFT_INSTRUCTIONS = {
    DraftFormat.cot: "Explain the relevant domain knowledge and reason step by step, then give your answer "
    "on a last line that starts with 'Answer:'.",
    DraftFormat.knowledge: "Write down the background knowledge needed to answer this question. Do not answer it.",
    DraftFormat.answer: "Give only the answer.",
}
_DRAFT_KINDS = {
    DraftFormat.cot: "analysis and answer",
    DraftFormat.knowledge: "background knowledge",
    DraftFormat.answer: "answer",
}

WEAK = Template("$task\n\n${facts}${context}Question: $question\n\n$instruction")
# Said after the draft instruction when the prompt carries looked-up facts: the weak model is trained on such
# prompts to copy the facts about the question's own items and to say when none is about them.
USE_FACTS = (
    "Use only the facts above that are about the items in the question; if a fact you need is not there, "
    "say which one is missing."
)
STRONG = Template(
    "$task\n\n${context}Question: $question\n\n"
    "A domain-specialised assistant drafted the following $draft_kind:\n---\n$draft\n---\n"
    "$check $answer_instruction"
)
CHECK = "Using your own reasoning, briefly verify this draft and correct it if it is wrong."
# With a calculator: the draft is trusted for its facts only (the specialist knows them; its arithmetic and its
# conclusions are what a 135M model gets wrong), and the strong model redoes the computation through the tool.
CHECK_WITH_CALCULATOR = (
    "Take the facts about the question's items from this draft, but do not trust its calculation or its answer: "
    "decide yourself which facts and which operations the question needs."
)
STRONG_ALONE = Template("$task\n\n${facts}${context}Question: $question\n\n$answer_instruction")

Messages = list[dict[str, str]]


def get_domain(name: str | None) -> DomainSpec:
    """The domain's spec; unknown domains use the general task wording under their own name."""
    return get(name)


def _answer_instruction(d: DomainSpec) -> str:
    if d.calculator:
        return (
            "Reply in exactly three lines: 'Work: <the facts you use, on one line>', 'Calc: <the calculation that "
            "gives the answer's number, as one arithmetic expression over those numbers (+ - * / and floor(), round() "
            "where the question wants whole numbers); none only when the answer is a name>' and 'Answer: <final "
            f"answer>', where the final answer is {d.answer_format}. Do not add or multiply in your head: a "
            "calculator evaluates the Calc line and its value replaces your answer's number."
        )
    if d.work_line:
        return (
            "Reply in exactly two lines: 'Work: <the facts you use and the one calculation or comparison, "
            f"on one line>' and then 'Answer: <final answer>', where the final answer is {d.answer_format}."
        )
    if d.answer_line:
        return (
            f"End with a last line of the form 'Answer: <final answer>', where the final answer is {d.answer_format}."
        )
    return f"Give the final answer as {d.answer_format}."


def _context(context: str | None) -> str:
    return f"Context:\n{context.strip()}\n\n" if context and context.strip() else ""


def facts_block(lookup: Lookup | None) -> str:
    """The looked-up statements as the prompt shows them ("" when the request made no lookup)."""
    if lookup is None:
        return ""
    lines = [f"- {f}" for f in lookup.facts] or ["- none"]
    if lookup.missing:
        lines.append(f"No fact found about: {', '.join(lookup.missing)}.")
    return "Facts found for this question:\n" + "\n".join(lines) + "\n\n"


def _reply(demo: Demonstration, d: DomainSpec) -> str:
    if d.calculator:
        return f"Work: {demo.work}\nCalc: {demo.calc or 'none'}\nAnswer: {demo.answer}"
    return f"Work: {demo.work}\nAnswer: {demo.answer}" if d.work_line else f"Answer: {demo.answer}"


def _strong_prompt(
    d: DomainSpec,
    question: str,
    context: str | None,
    draft: str | None,
    draft_format: DraftFormat,
    lookup: Lookup | None = None,
) -> str:
    if draft is None:
        return STRONG_ALONE.substitute(
            task=d.task,
            facts=facts_block(lookup),
            context=_context(context),
            question=question.strip(),
            answer_instruction=_answer_instruction(d),
        )
    return STRONG.substitute(
        task=d.task,
        context=_context(context),
        question=question.strip(),
        draft_kind=_DRAFT_KINDS[DraftFormat(draft_format)],
        draft=draft.strip(),
        check=CHECK_WITH_CALCULATOR if d.calculator else CHECK,
        answer_instruction=_answer_instruction(d),
    )


def _demonstrations(d: DomainSpec, with_draft: bool, draft_format: DraftFormat) -> Messages:
    """The spec's worked examples as earlier turns, in the same prompt as the question (with or without the draft)."""
    turns: Messages = []
    for demo in d.demonstrations:
        prompt = _strong_prompt(d, demo.question, demo.context, demo.draft if with_draft else None, draft_format)
        turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": _reply(demo, d)}]
    return turns


def weak_messages(
    question: str,
    domain: str | None = None,
    context: str | None = None,
    draft_format: DraftFormat = DraftFormat.cot,
    history: Messages | None = None,
    lookup: Lookup | None = None,
) -> Messages:
    """The weak model's draft request; `lookup`: the facts a knowledge lookup returned (None: no lookup)."""
    d = get_domain(domain)
    instruction = _DRAFT_INSTRUCTIONS[DraftFormat(draft_format)]
    prompt = WEAK.substitute(
        task=d.task,
        facts=facts_block(lookup),
        context=_context(context),
        question=question.strip(),
        instruction=f"{USE_FACTS} {instruction}" if lookup is not None else instruction,
    )
    return [*(history or []), {"role": "user", "content": prompt}]


def strong_messages(
    question: str,
    draft: str,
    domain: str | None = None,
    context: str | None = None,
    draft_format: DraftFormat = DraftFormat.cot,
    history: Messages | None = None,
) -> Messages:
    d = get_domain(domain)
    prompt = _strong_prompt(d, question, context, draft, draft_format)
    return [*_demonstrations(d, True, draft_format), *(history or []), {"role": "user", "content": prompt}]


def strong_alone_messages(
    question: str,
    domain: str | None = None,
    context: str | None = None,
    history: Messages | None = None,
    lookup: Lookup | None = None,
) -> Messages:
    """The strong model without a draft; with `lookup`, given the same looked-up facts the weak model would get
    (strong + retrieval: what a user would build instead of a weak model)."""
    d = get_domain(domain)
    prompt = _strong_prompt(d, question, context, None, DraftFormat.cot, lookup)
    return [*_demonstrations(d, False, DraftFormat.cot), *(history or []), {"role": "user", "content": prompt}]
