"""Prompt templates of the collaboration, in one place: serving, collaborative feedback and
evaluation all build their messages here, so training sees exactly what serving sends.

CoWest inference is y* = strong(x, weak(x)): the weak model drafts (CoT by default: the paper's best
format), the strong model refines given the question and the draft. `strong_alone_messages` is the
baseline that collaborative feedback compares against (strong(x) without a draft).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from string import Template


class DraftFormat(str, Enum):
    cot = "cot"  # reasoning + answer
    knowledge = "knowledge"  # background knowledge only
    answer = "answer"  # the answer only


@dataclass(frozen=True)
class Domain:
    name: str
    task: str  # what the task is, said to both models
    answer_format: str  # how the final answer must look
    answer_line: bool = True  # the strong model ends with "Answer: ..." (scored tasks: the answer is extractable)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in [
        Domain("general", "Answer the user's question accurately.", "a clear, concise answer", answer_line=False),
        Domain("ifqa", "Answer the counterfactual question, taking its 'if' premise as true even when it "
               "contradicts the real world.", "a short answer phrase"),
        Domain("pubmedqa", "Answer the biomedical research question from the given abstract.",
               "one word: yes, no or maybe"),
        Domain("ethics", "Judge whether the described action is clearly morally wrong by ordinary standards.",
               "one word: acceptable or wrong"),
        Domain("ethics-deontology", "Judge whether the excuse is a reasonable reason not to do what was requested.",
               "one word: reasonable or unreasonable"),
        Domain("synthetic", "Answer the question about the company, using its product facts and policies.",
               "a short phrase, nothing else"),
    ]
}
DEFAULT_DOMAIN = "general"

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

WEAK = Template("$task\n\n${context}Question: $question\n\n$instruction")
STRONG = Template(
    "$task\n\n${context}Question: $question\n\n"
    "A domain-specialised assistant drafted the following $draft_kind:\n---\n$draft\n---\n"
    "Using your own reasoning, briefly verify this draft and correct it if it is wrong. $answer_instruction"
)
STRONG_ALONE = Template("$task\n\n${context}Question: $question\n\n$answer_instruction")

Messages = list[dict[str, str]]


def get_domain(name: str | None) -> Domain:
    """The domain's prompts; unknown domains use the general task wording under their own name."""
    if not name:
        return DOMAINS[DEFAULT_DOMAIN]
    return DOMAINS.get(name) or Domain(name, DOMAINS[DEFAULT_DOMAIN].task, DOMAINS[DEFAULT_DOMAIN].answer_format)


def _answer_instruction(d: Domain) -> str:
    if d.answer_line:
        return f"End with a last line of the form 'Answer: <final answer>', where the final answer is {d.answer_format}."
    return f"Give the final answer as {d.answer_format}."


def _context(context: str | None) -> str:
    return f"Context:\n{context.strip()}\n\n" if context and context.strip() else ""


def weak_messages(question: str, domain: str | None = None, context: str | None = None,
                  draft_format: DraftFormat = DraftFormat.cot, history: Messages | None = None) -> Messages:
    d = get_domain(domain)
    prompt = WEAK.substitute(task=d.task, context=_context(context), question=question.strip(),
                             instruction=_DRAFT_INSTRUCTIONS[DraftFormat(draft_format)])
    return [*(history or []), {"role": "user", "content": prompt}]


def strong_messages(question: str, draft: str, domain: str | None = None, context: str | None = None,
                    draft_format: DraftFormat = DraftFormat.cot, history: Messages | None = None) -> Messages:
    d = get_domain(domain)
    prompt = STRONG.substitute(task=d.task, context=_context(context), question=question.strip(),
                               draft_kind=_DRAFT_KINDS[DraftFormat(draft_format)], draft=draft.strip(),
                               answer_instruction=_answer_instruction(d))
    return [*(history or []), {"role": "user", "content": prompt}]


def strong_alone_messages(question: str, domain: str | None = None, context: str | None = None,
                          history: Messages | None = None) -> Messages:
    d = get_domain(domain)
    prompt = STRONG_ALONE.substitute(task=d.task, context=_context(context), question=question.strip(),
                                     answer_instruction=_answer_instruction(d))
    return [*(history or []), {"role": "user", "content": prompt}]
