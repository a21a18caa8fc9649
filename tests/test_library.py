"""The shipped case library and its eval set: valid, complete enough, and answered right.

A bad edit to a case file fails here with the file and field named."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bot.cases import ORGANS, load_cases
from bot.evaluation import check, load_suite
from bot.answer import Answer, cited_ids
from bot.lexicon import Lexicon
from conftest import KNOWLEDGE, PROJECT_ROOT, run_casebot

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")
CASE_FILES = sorted((KNOWLEDGE / "cases").glob("*.md"))
SECTIONS = ["## Presentation", "## Prior treatment", "## Resistance", "## Next therapy", "## Outcome",
            "## Teaching points"]
FIELDS = ["id", "title", "subtype", "organs", "antibodies", "failed_therapies", "next_therapies", "outcome",
          "evidence", "source"]
EVAL_FILES = sorted((PROJECT_ROOT / "evals").glob("*.yaml"))
SUITES = [load_suite(path) for path in EVAL_FILES]
TESTS = [test for suite in SUITES for test in suite.tests]
QUESTION_TESTS = [test for test in TESTS if not test.vignette]  # vignettes go through `casebot similar` (test_similar)


def front_matter(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8").split("---\n")[1])


def test_every_case_file_loads():
    cases, rejections = load_cases([KNOWLEDGE], LEXICON)
    assert [str(r) for r in rejections] == []
    assert len(cases) == len(CASE_FILES)


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.name)
def test_case_file_is_complete_and_uses_the_vocabulary(path: Path):
    meta = front_matter(path)
    missing = [field for field in FIELDS if field not in meta or meta[field] in (None, "")]
    assert not missing, f"{path}: missing front-matter field(s) {missing}"
    assert meta["id"] == path.stem, f"{path}: id {meta['id']!r} differs from the file name"
    assert set(meta["organs"]) <= set(ORGANS), f"{path}: field 'organs' {meta['organs']}"
    assert meta["organs"], f"{path}: field 'organs' is empty"
    for field in ("failed_therapies", "next_therapies"):
        for therapy in meta[field]:
            assert LEXICON.canonical("therapies", therapy) == therapy, \
                f"{path}: field '{field}' value {therapy!r} is not a canonical lexicon therapy"
    for antibody in meta["antibodies"]:
        assert LEXICON.canonical("antibodies", antibody) == antibody, f"{path}: field 'antibodies' {antibody!r}"
    assert meta["next_therapies"], f"{path}: field 'next_therapies' is empty"
    body = path.read_text(encoding="utf-8").split("---\n", 2)[2]
    headings = [line.strip() for line in body.splitlines() if line.startswith("## ")]
    assert headings == SECTIONS, f"{path}: headings {headings}"
    assert "\n- " in body.split("## Teaching points")[1], f"{path}: '## Teaching points' has no bullet"


def test_library_covers_every_resistant_ssc_problem():
    metas = [front_matter(path) for path in CASE_FILES]
    ids = [m["id"] for m in metas]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    organs = Counter(organ for m in metas for organ in m["organs"])
    minimum = {"lung": 8, "skin": 6, "vascular": 5, "pulmonary-hypertension": 5, "kidney": 5,
               "gastrointestinal": 4, "heart": 2}
    short = {organ: organs[organ] for organ, n in minimum.items() if organs[organ] < n}
    assert not short, f"too few cases for {short}"
    antibodies = {a for m in metas for a in m["antibodies"]}
    assert {"anti-Scl-70", "anticentromere", "anti-RNA polymerase III"} <= antibodies
    outcomes = Counter(m["outcome"] for m in metas)
    assert outcomes["died"] >= 3 and outcomes["worsened"] >= 3
    therapies = {t for m in metas for t in m["failed_therapies"] + m["next_therapies"]}
    required = {"mycophenolate mofetil", "cyclophosphamide", "methotrexate", "rituximab", "tocilizumab",
                "nintedanib", "autologous haematopoietic stem cell transplantation", "CD19 CAR-T cell therapy",
                "ambrisentan", "iloprost", "ACE inhibitors", "plasma exchange", "eculizumab", "octreotide"}
    assert required <= therapies, f"no case with {sorted(required - therapies)}"


def test_eval_set_is_big_enough_and_expects_every_case():
    assert len(QUESTION_TESTS) >= 200
    assert sum(1 for t in TESTS for s in t.steps() if s.expect_refusal) >= 30
    assert sum(1 for t in TESTS if len(t.turns) >= 2) >= 40
    assert sum(1 for t in TESTS if t.filters or any(s.filters for s in t.turns)) >= 3
    expected = {cid for t in TESTS for s in t.steps() for cid in s.expect_cases + s.expect_any}
    assert {path.stem for path in CASE_FILES} <= expected, "cases no eval question expects"
    assert expected <= {path.stem for path in CASE_FILES}, "eval expects a case that does not exist"


# The eval set is written to be harder than the system (evals/clinician-phrasing.yaml, conversations.yaml, and
# bedside.yaml, written 2026-12-04 after the others all passed): measured 2026-12-04 at 327 of 330 tests, no
# off-topic turn answered (the misses: three questions with words no case uses, "12 yo", "itching like mad",
# "laxatives did nothing", refused by the gate). It was 305 of 312 on 2026-12-03 and 260 of 286 before the
# answering-core round two. The floor leaves three tests of slack for another machine's floating point.
MIN_PASSING_TESTS = 0.98
MAX_OFF_TOPIC_ANSWERED = 0


def test_the_eval_set_passes_through_chat_jsonl_at_its_measured_floor(knowledge_settings, knowledge_bot):
    """Each test is one conversation, named after the test; the CLI answers it as a clinician would see it."""
    steps = [(test.id, step) for test in QUESTION_TESTS for step in test.steps()]
    lines = [json.dumps({"question": step.question, "conversation": test_id, "filters": step.filters})
             for test_id, step in steps]
    result = run_casebot("chat", "--jsonl", "--db", str(knowledge_settings.db), stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    answers = [Answer.model_validate_json(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(steps)
    failures: dict[str, list[str]] = {}
    off_topic_answered = []
    for (test_id, step), answer in zip(steps, answers):
        assert cited_ids(answer.answer) == [c.case_id for c in answer.citations]
        failures.setdefault(test_id, []).extend(f"{step.question!r}: {problem}" for problem in check(step, answer))
        if step.expect_refusal and not answer.refused:
            off_topic_answered.append(f"{test_id}: {step.question!r}")
    failed = {test_id: problems for test_id, problems in failures.items() if problems}
    print(f"{len(QUESTION_TESTS) - len(failed)} of {len(QUESTION_TESTS)} eval tests pass; failing: {failed}")
    assert (len(QUESTION_TESTS) - len(failed)) / len(QUESTION_TESTS) >= MIN_PASSING_TESTS, failed
    assert len(off_topic_answered) <= MAX_OFF_TOPIC_ANSWERED, off_topic_answered
