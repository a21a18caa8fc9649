"""Scripted test prompts (SPEC section 6): loading the YAML and checking answers against expectations.

Each test runs through `CaseBot.ask`, the same path as the chat, and a turn passes when every one of its
expectations holds; the failures name what was expected and what came back.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.answer import Answer


class Expectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    expect_cases: list[str] = []
    expect_any: list[str] = []
    forbid_cases: list[str] = []
    must_include: list[str] = []
    must_not_include: list[str] = []
    expect_refusal: bool = False
    max_latency_ms: float | None = None
    filters: dict[str, str] = {}


class EvalTest(Expectations):
    """A single question, or a conversation of `turns` (then `question` is unused)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    question: str = ""
    tags: list[str] = []
    turns: list[Expectations] = []

    @model_validator(mode="after")
    def _question_or_turns(self) -> EvalTest:
        if bool(self.question) == bool(self.turns):
            raise ValueError("give either `question` or `turns`, not both or neither")
        return self

    def steps(self) -> list[Expectations]:
        if self.turns:
            return [turn.model_copy(update={"filters": turn.filters or self.filters}) for turn in self.turns]
        return [self]


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    tests: list[EvalTest] = Field(min_length=1)


class SuiteError(ValueError):
    """An eval file that cannot be used, naming the file, test and field."""


def load_suite(path: Path) -> Suite:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SuiteError(f"{path}: cannot read YAML ({error})") from error
    try:
        suite = Suite.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        loc = list(first["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "tests" and isinstance(loc[1], int):
            tests = (data or {}).get("tests") or []
            test_id = tests[loc[1]].get("id", f"#{loc[1] + 1}") if isinstance(tests[loc[1]], dict) else f"#{loc[1] + 1}"
            where, loc = f" test {test_id!r}", loc[2:]
        field = ".".join(str(part) for part in loc) or "(file)"
        raise SuiteError(f"{path}:{where} field '{field}': {first['msg']}") from error
    ids = [test.id for test in suite.tests]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SuiteError(f"{path}: duplicate test id {duplicates[0]!r}")
    return suite


def check(expected: Expectations, answer: Answer) -> list[str]:
    """Every expectation the answer misses, in words."""
    cited = [c.case_id for c in answer.citations]
    text = answer.answer.lower()
    failures = []
    for case_id in expected.expect_cases:
        if case_id not in cited:
            failures.append(f"expected case {case_id} not cited (cited: {', '.join(cited) or 'none'})")
    if expected.expect_any and not set(expected.expect_any) & set(cited):
        failures.append(f"none of {', '.join(expected.expect_any)} cited (cited: {', '.join(cited) or 'none'})")
    for case_id in expected.forbid_cases:
        if case_id in cited:
            failures.append(f"forbidden case {case_id} cited")
    for term in expected.must_include:
        if term.lower() not in text:
            failures.append(f"answer lacks {term!r}")
    for term in expected.must_not_include:
        if term.lower() in text:
            failures.append(f"answer contains {term!r}")
    if answer.refused != expected.expect_refusal:
        failures.append("answer refused" if answer.refused else "expected a refusal, got an answer")
    if expected.max_latency_ms is not None and answer.timings_ms.get("total", 0) > expected.max_latency_ms:
        failures.append(f"took {answer.timings_ms['total']:.0f} ms > {expected.max_latency_ms:.0f} ms")
    return failures
