"""Scripted test prompts (SPEC section 6): loading the YAML, checking answers against expectations, running
suites through the bot and measuring every answer.

Each test runs through `CaseBot.ask`, the same path as the chat, and a turn passes when every one of its
expectations holds; the failures name what was expected and what came back. The measurements (retrieval,
citations, faithfulness, refusals, latency) are defined in the README's "Evaluation" section.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.answer import MARKER, Answer, cited_ids, prompt
from bot.cases import Case
from bot.conversation import CaseBot, QuestionError, clean_question
from bot.generation import EXTRACTIVE
from bot.lexicon import Lexicon
from bot.retrieval import FilterError
from bot.similar import PatientMatcher, VignetteError, markdown
from bot.text import sentences


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
    """A single question, a conversation of `turns`, or a patients-like-mine `vignette` whose expected cases
    must be among its top `k` matches (then `question` is unused)."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    question: str = ""
    tags: list[str] = []
    turns: list[Expectations] = []
    vignette: str = ""
    k: int | None = Field(None, ge=1, le=50)

    @model_validator(mode="after")
    def _question_turns_or_vignette(self) -> EvalTest:
        if sum(map(bool, (self.question, self.turns, self.vignette))) != 1:
            raise ValueError("give one of `question`, `turns` or `vignette`")
        if self.vignette and (self.filters or self.max_latency_ms is not None):
            raise ValueError("`filters` and `max_latency_ms` do not apply to a `vignette` test")
        if self.k is not None and not self.vignette:
            raise ValueError("`k` applies to a `vignette` test only")
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
    failures = case_failures(expected, [c.case_id for c in answer.citations], answer.answer, "cited")
    if answer.refused != expected.expect_refusal:
        failures.append("answer refused" if answer.refused else "expected a refusal, got an answer")
    if expected.max_latency_ms is not None and answer.timings_ms.get("total", 0) > expected.max_latency_ms:
        failures.append(f"took {answer.timings_ms['total']:.0f} ms > {expected.max_latency_ms:.0f} ms")
    return failures


def case_failures(expected: Expectations, shown: list[str], text: str, where: str) -> list[str]:
    """The expected, forbidden and required-word checks against the cases `shown` (cited, or a vignette's
    top matches: `where` says which) and the text shown with them."""
    listed = f"({where}: {', '.join(shown) or 'none'})"
    failures = [f"expected case {case_id} not {where} {listed}" for case_id in expected.expect_cases
                if case_id not in shown]
    if expected.expect_any and not set(expected.expect_any) & set(shown):
        failures.append(f"none of {', '.join(expected.expect_any)} {where} {listed}")
    failures += [f"forbidden case {case_id} {where}" for case_id in expected.forbid_cases if case_id in shown]
    failures += [f"answer lacks {term!r}" for term in expected.must_include if term.lower() not in text.lower()]
    failures += [f"answer contains {term!r}" for term in expected.must_not_include if term.lower() in text.lower()]
    return failures


# ---------------------------------------------------------------------------------------------------------
# Running a set of suites through the bot and measuring each answer (metrics defined in README "Evaluation").

RECALL_AT_K = 5  # retrieval recall is measured in the first 5 ranked cases
VIGNETTE_TOP_K = 3  # a vignette test's expected cases must be among this many matches, unless it gives `k`
RANKED_KEPT = 10  # ranked cases kept per turn (`retrieved`)
WARM_UP_CONVERSATION = "casebot-eval-warm-up"
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_LETTERS = re.compile(r"[^\W\d_]{2,}")
# A sentence that follows a citation marker: "... [case-a] Then ..." is two sentences.
_AFTER_MARKER = re.compile(r"(?<=\])\s+(?=[A-Z0-9\"'(*])")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")  # the |---|---| line under a Markdown table's header


@dataclass
class PlannedTest:
    """A test to run, with the file and suite it came from."""

    path: Path
    suite: str
    test: EvalTest


class TurnResult(BaseModel):
    """One question of a test: what was expected, what came back, and its measurements."""

    kind: Literal["question", "vignette"] = "question"
    question: str  # a vignette test's vignette
    standalone_question: str  # a vignette test's profile, as understood
    filters: dict[str, str] = {}
    expect_refusal: bool
    refused: bool
    expect_cases: list[str] = []
    expect_any: list[str] = []
    cited: list[str] = []
    retrieved: list[str] = []
    failures: list[str] = []
    latency_ms: float
    retrieval_recall: float | None = None
    reciprocal_rank: float | None = None
    citation_precision: float | None = None
    citation_recall: float | None = None
    citation_problems: list[str] = []
    factual_sentences: int = 0
    uncited_sentences: list[str] = []
    checked_sentences: int = 0
    unfaithful_sentences: list[str] = []


class TestResult(BaseModel):
    """One test (a question or a conversation): passed when every expectation of every turn held."""

    __test__ = False  # not a pytest test class

    id: str
    suite: str
    file: str
    tags: list[str] = []
    passed: bool
    failures: list[str] = []
    latency_ms: float
    turns: list[TurnResult]


def plan(paths: list[Path], tags: list[str] | None = None) -> list[PlannedTest]:
    """The tests of these files (those with any of `tags`, when given); ids must be unique across files,
    because each names its conversation and its line in a comparison."""
    planned: list[PlannedTest] = []
    seen: dict[str, Path] = {}
    for path in paths:
        suite = load_suite(path)
        for test in suite.tests:
            if test.id in seen:
                raise SuiteError(f"{path}: test {test.id!r} field 'id': also used in {seen[test.id]}")
            seen[test.id] = path
            if not tags or set(tags) & set(test.tags):
                planned.append(PlannedTest(path, suite.name, test))
    if not planned:
        raise SuiteError(f"{', '.join(map(str, paths))}: no test has tag {' or '.join(map(repr, tags or []))}")
    return planned


def validate(bot: CaseBot, planned: list[PlannedTest]) -> list[str]:
    """Reject questions and filters the bot would refuse as input (SuiteError naming file, test and field),
    before anything runs; return warnings for expected cases the library does not hold."""
    warnings = []
    for item in planned:
        test = item.test
        for number, step in enumerate(test.steps()):
            prefix = f"turns.{number}." if test.turns else ""
            try:
                if not test.vignette:  # a vignette is checked as the similar command checks it, when run
                    clean_question(step.question)
            except QuestionError as error:
                raise SuiteError(f"{item.path}: test {test.id!r} field '{prefix}question': {error}") from error
            try:
                bot.retriever.allowed_cases(step.filters)
            except FilterError as error:
                field = f"{prefix}filters" if test.turns and test.turns[number].filters else "filters"
                raise SuiteError(f"{item.path}: test {test.id!r} field '{field}': {error}") from error
            for name in ("expect_cases", "expect_any", "forbid_cases"):
                for case_id in getattr(step, name):
                    if case_id not in bot.retriever.cases:
                        warnings.append(f"{item.path}: test {test.id!r} field '{prefix}{name}': "
                                        f"case {case_id!r} is not in the library")
    return list(dict.fromkeys(warnings))


def evaluate(bot: CaseBot, planned: list[PlannedTest],
             on_result: Callable[[TestResult], None] | None = None) -> list[TestResult]:
    """Run each test through `CaseBot.ask` in its own conversation (named by the test id), turns in order, and
    each vignette test through the patients-like-mine matcher (bot/similar.py) that `casebot similar` uses.

    One untimed question is asked first in a throw-away conversation (and the cases' features read, with
    vignette tests), so latencies are those of a warm bot."""
    question = next((item.test.steps()[0].question for item in planned if not item.test.vignette), None)
    if question:
        bot.ask(question, WARM_UP_CONVERSATION)
        bot.forget(WARM_UP_CONVERSATION)
    matcher = PatientMatcher(bot.retriever, bot.lexicon, bot.settings)
    if any(item.test.vignette for item in planned):
        matcher.case_features()
        bot.retriever.embedder.embed_query("warm-up")
    note = prompt(bot.settings.prompts_dir, "educational_note.md")
    results = []
    for item in planned:
        test = item.test
        bot.forget(test.id)
        turns = [assess_vignette(test, matcher)] if test.vignette else []
        for step in [] if test.vignette else test.steps():
            answer = bot.ask(step.question, conversation=test.id, filters=step.filters or None)
            turns.append(assess(step, answer, bot.retriever.cases, bot.lexicon, note))
        bot.forget(test.id)
        failures = [f"turn {n}: {f}" if len(turns) > 1 else f
                    for n, turn in enumerate(turns, start=1) for f in turn.failures]
        result = TestResult(id=test.id, suite=item.suite, file=str(item.path), tags=test.tags, passed=not failures,
                            failures=failures, latency_ms=round(sum(t.latency_ms for t in turns), 1), turns=turns)
        results.append(result)
        if on_result:
            on_result(result)
    return results


def assess(expected: Expectations, answer: Answer, cases: dict[str, Case], lexicon: Lexicon,
           note: str) -> TurnResult:
    """The expectation check and every per-answer measurement of one turn."""
    cited = [c.case_id for c in answer.citations]
    groups = required_groups(expected)
    answerable = bool(groups) and not expected.expect_refusal
    relevant = set(expected.expect_cases) | set(expected.expect_any)
    factual = [] if answer.refused else factual_sentences(answer.answer, note)
    cited_sentences = [s for s in factual if cited_ids(s)]
    if answer.backend == EXTRACTIVE:  # text composed from the passages: its names and numbers are checked here
        checked = [(s, unsupported_claims(s, answer, cases, lexicon)) for s in cited_sentences]
        checked = [(s, missing) for s, missing in checked if missing is not None]
    else:  # generated: a sentence keeps its marker only when the claim check (bot/verification.py) vouched for it
        checked = [(s, []) for s in cited_sentences]
    # what the model wrote and the claim check rejected, shown or not (a draft with no verified sentence is
    # replaced by the extractive answer), so a drifting backend lowers faithfulness in report.html
    rejected = [f"{s} (the claim check found no cited case supporting it)" for s in answer.unsupported]
    return TurnResult(
        question=answer.question, standalone_question=answer.standalone_question, filters=expected.filters,
        expect_refusal=expected.expect_refusal, refused=answer.refused, expect_cases=expected.expect_cases,
        expect_any=expected.expect_any, cited=cited, retrieved=answer.retrieved, failures=check(expected, answer),
        latency_ms=answer.timings_ms.get("total", 0.0),
        retrieval_recall=recall(groups, answer.retrieved[:RECALL_AT_K]) if answerable else None,
        reciprocal_rank=reciprocal_rank(relevant, answer.retrieved) if answerable else None,
        citation_precision=(_ratio(sum(1 for c in cited if c in relevant), len(cited))
                            if relevant or expected.expect_refusal else None),
        citation_recall=recall(groups, cited) if answerable else None,
        citation_problems=citation_problems(answer),
        factual_sentences=len(factual),
        uncited_sentences=[s for s in factual if not cited_ids(s)],
        checked_sentences=len(checked) + len(rejected),
        unfaithful_sentences=[f"{s} (not in the cited evidence: {', '.join(missing)})"
                              for s, missing in checked if missing] + rejected)


def assess_vignette(test: EvalTest, matcher: PatientMatcher) -> TurnResult:
    """A vignette test: its expected cases among the top `k` matches (what the checks and citation recall
    read), the first RANKED_KEPT matches as `retrieved` (retrieval recall@5 and MRR); a refused vignette
    (an identifier, nothing usable) is its refusal."""
    k = test.k or VIGNETTE_TOP_K
    started = time.perf_counter()
    try:
        result = matcher.find(test.vignette, k=k)  # what `casebot similar --k K` shows
    except VignetteError as error:
        result, reason = None, str(error)
    latency = round((time.perf_counter() - started) * 1000, 1)
    ranked = [m.case_id for m in matcher.rank(result.profile, test.vignette, RANKED_KEPT)] if result else []
    failures = case_failures(test, ranked[:k], markdown(result) if result else "", f"in the top {k}")
    if result is None and not test.expect_refusal:
        failures.append(f"vignette refused: {reason}")
    elif result is not None and test.expect_refusal:
        failures.append("expected the vignette to be refused, got matches")
    groups = required_groups(test)
    answerable = bool(groups) and not test.expect_refusal
    return TurnResult(
        kind="vignette", question=test.vignette, standalone_question=result.understood_as if result else "",
        expect_refusal=test.expect_refusal, refused=result is None, expect_cases=test.expect_cases,
        expect_any=test.expect_any, cited=ranked[:k], retrieved=ranked, failures=failures, latency_ms=latency,
        retrieval_recall=recall(groups, ranked[:RECALL_AT_K]) if answerable else None,
        reciprocal_rank=reciprocal_rank(set(test.expect_cases) | set(test.expect_any), ranked)
        if answerable else None,
        citation_recall=recall(groups, ranked[:k]) if answerable else None)


def required_groups(expected: Expectations) -> list[set[str]]:
    """What a turn asks to find: each `expect_cases` id on its own, and the `expect_any` ids as one group
    that counts as found when any of its members is."""
    groups = [{case_id} for case_id in expected.expect_cases]
    if expected.expect_any:
        groups.append(set(expected.expect_any))
    return groups


def recall(groups: list[set[str]], found: list[str]) -> float:
    return round(sum(1 for group in groups if group & set(found)) / len(groups), 4)


def reciprocal_rank(relevant: set[str], ranked: list[str]) -> float:
    return next((round(1 / rank, 4) for rank, case_id in enumerate(ranked, start=1) if case_id in relevant), 0.0)


def citation_problems(answer: Answer) -> list[str]:
    """Why the answer's citations cannot be trusted as given (empty when every marker resolves to a
    retrieved case and the markers and `citations` name the same cases, once each)."""
    markers = cited_ids(answer.answer)
    listed = [c.case_id for c in answer.citations]
    problems = [f"[{m}] is not a retrieved case" for m in markers if m not in answer.retrieved]
    problems += [f"[{m}] has no entry in citations" for m in markers if m not in listed]
    problems += [f"citation {c} is not marked in the answer" for c in dict.fromkeys(listed) if c not in markers]
    problems += [f"citation {c} is listed {listed.count(c)} times" for c in dict.fromkeys(listed) if listed.count(c) > 1]
    if answer.refused and (markers or listed):
        problems.append("a refusal cites cases")
    return problems


def factual_sentences(text: str, note: str) -> list[str]:
    """The answer's statements, without the educational note: its sentences and list items, and each data row
    of a Markdown table (its header and separator rows are not statements). A line ending in a colon only
    introduces what follows it, and a piece without a word is not a statement."""
    prose, rows = [], []
    lines = text.replace(note, "").splitlines()
    for number, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            prose.append(line)
        elif not _TABLE_RULE.match(line) and not (number + 1 < len(lines) and _TABLE_RULE.match(lines[number + 1])):
            rows.append(line.strip())
    pieces = [part.strip() for sentence in sentences("\n".join(prose)) for part in _AFTER_MARKER.split(sentence)]
    return [piece for piece in pieces + rows
            if _LETTERS.search(MARKER.sub(" ", piece)) and not piece.rstrip("*_ ").endswith(":")]


def unsupported_claims(sentence: str, answer: Answer, cases: dict[str, Case], lexicon: Lexicon) -> list[str] | None:
    """The therapy names and numbers of a cited sentence that its cited evidence lacks; None when the
    sentence names neither. Evidence: the passages the answer quotes for those cases, and each case's title
    and metadata (what failed, what followed, the outcome)."""
    plain = MARKER.sub(" ", sentence)
    if sentence.startswith("|"):  # a table row: a cell holding only a whole number is a tally of its cases
        plain = " | ".join(cell for cell in plain.split("|") if not cell.strip().isdigit())
    therapies = [(surface, {t.canonical for t in terms if t.group == "therapies"})
                 for surface, terms in lexicon.mentions(plain)]
    therapies = [(surface, names) for surface, names in therapies if names]
    numbers = list(dict.fromkeys(_NUMBER.findall(plain)))
    if not therapies and not numbers:
        return None
    ids = set(cited_ids(sentence))
    evidence = [p for c in answer.citations if c.case_id in ids for p in c.passages]
    evidence += [f"{cases[i].title}. {cases[i].summary()}" for i in ids if i in cases]
    text = " ".join(evidence)
    present = {t.canonical for t in lexicon.find(text) if t.group == "therapies"}
    known_numbers = set(_NUMBER.findall(text))
    return [surface for surface, names in therapies if not names & present] + \
        [number for number in numbers if number not in known_numbers]


class Summary(BaseModel):
    """Counts and metrics over all tests run (README "Evaluation"); a metric with nothing to measure is None."""

    total: int
    passed: int
    failed: int
    pass_rate: float
    turns: int
    recall_k: int = RECALL_AT_K
    retrieval_recall_at_k: float | None
    mrr: float | None
    citation_precision: float | None
    citation_recall: float | None
    citation_validity: float | None
    uncited_sentence_share: float | None
    faithfulness: float | None
    refusal_precision: float | None
    refusal_recall: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class TagSummary(BaseModel):
    total: int
    passed: int
    pass_rate: float


def summarise(results: list[TestResult]) -> Summary:
    turns = [turn for result in results for turn in result.turns]
    asked = [turn for turn in turns if turn.kind == "question"]  # a vignette's matches are no citations
    passed = sum(1 for result in results if result.passed)
    latencies = [turn.latency_ms for turn in turns]
    refused = [turn for turn in turns if turn.refused]
    expected_refusals = [turn for turn in turns if turn.expect_refusal]
    right_refusals = sum(1 for turn in refused if turn.expect_refusal)
    factual = sum(turn.factual_sentences for turn in turns)
    checked = sum(turn.checked_sentences for turn in turns)
    return Summary(
        total=len(results), passed=passed, failed=len(results) - passed,
        pass_rate=_ratio(passed, len(results)) or 0.0, turns=len(turns),
        retrieval_recall_at_k=_mean([t.retrieval_recall for t in turns]),
        mrr=_mean([t.reciprocal_rank for t in turns]),
        citation_precision=_mean([t.citation_precision for t in turns]),
        citation_recall=_mean([t.citation_recall for t in turns]),
        citation_validity=_ratio(sum(1 for t in asked if not t.citation_problems), len(asked)),
        uncited_sentence_share=_ratio(sum(len(t.uncited_sentences) for t in turns), factual),
        faithfulness=_ratio(checked - sum(len(t.unfaithful_sentences) for t in turns), checked),
        refusal_precision=_ratio(right_refusals, len(refused)),
        refusal_recall=_ratio(right_refusals, len(expected_refusals)),
        latency_p50_ms=round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        latency_p95_ms=round(float(np.percentile(latencies, 95)), 1) if latencies else None)


def by_tag(results: list[TestResult]) -> dict[str, TagSummary]:
    tags = sorted({tag for result in results for tag in result.tags})
    out = {}
    for tag in tags:
        tagged = [result for result in results if tag in result.tags]
        passed = sum(1 for result in tagged if result.passed)
        out[tag] = TagSummary(total=len(tagged), passed=passed, pass_rate=round(passed / len(tagged), 4))
    return out


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(sum(present) / len(present), 4) if present else None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
