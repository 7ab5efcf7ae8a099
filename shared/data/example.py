"""The one schema every domain is loaded into."""

from __future__ import annotations

from pydantic import BaseModel


class Example(BaseModel):
    id: str
    domain: str
    question: str
    context: str | None = None
    choices: list[str] | None = None
    answer: str | list[str]  # a list: every acceptable answer
    rationale: str | None = None  # SFT target: the knowledge and reasoning the weak model's draft should give
    kind: str | None = None  # the question's type, when the domain tags them (reports break results down by it)

    @property
    def answers(self) -> list[str]:
        return [self.answer] if isinstance(self.answer, str) else list(self.answer)
