"""Generalisation: a library and questions written apart from knowledge/ and never used for tuning, with
conversations that switch topic, return to an earlier case and ask something off-topic in the middle.

Targets (SPEC section 7 and the answering-core issue): the expected case cited for at least 95% of the
answerable turns, every off-topic turn refused (alone or mid-conversation), no refusal of a turn whose
expected case ranks first, and the [case-id] markers of each answer matching its citations one for one.
Measured 2026-12-07 (a first question naming nothing refused, everyday words no case uses weighed as everyday
words; unchanged from 2026-12-04, when front matter began choosing the lead and its companions): 161 of 166 answerable turns right (97.0%; 160 on 2026-12-03, 159 on 2026-12-02, 150 before round
two), 0 of 21 off-topic turns answered, none mid-conversation; first citation right for 145 of 155 single-case
turns (93.5%, as on 2026-12-03). Turns refused with their expected case first: 2. One of them is a disagreement with this set's label rather
than a miss: "any case with IV sodium thiosulfate?" is refused because no case mentions it (bot/gate.py), while the
set expects the nearest calcinosis case. The floors below leave a turn or two of slack for another machine, except
off-topic answers: the target is none."""

from __future__ import annotations

import pytest

from bot.answer import cited_ids
from bot.conversation import CaseBot
from bot.evaluation import load_suite
from bot.settings import load_settings
from conftest import HELDOUT


@pytest.fixture(scope="module")
def heldout_run(tmp_path_factory):
    bot = CaseBot(load_settings(db=tmp_path_factory.mktemp("heldout") / "chroma", knowledge=HELDOUT), log=lambda m: None)
    results = []
    for test in load_suite(HELDOUT / "questions.yaml").tests:
        for step in test.steps():
            results.append((test, step, bot.ask(step.question, test.id, step.filters or None)))
    return bot, results


def cited(answer) -> list[str]:
    return [c.case_id for c in answer.citations]


def right(step, answer) -> bool:
    return (not answer.refused and all(c in cited(answer) for c in step.expect_cases)
            and (not step.expect_any or bool(set(step.expect_any) & set(cited(answer)))))


def test_heldout_library_loads_with_its_plain_files(heldout_run):
    bot, _ = heldout_run
    assert len(bot.retriever.cases) >= 40
    assert {"ho-plain-du-sympathectomy", "ho-plain-gi-sibo-octreotide"} <= set(bot.retriever.cases)


def test_the_set_holds_conversations_that_switch_topic_and_go_off_topic(heldout_run):
    _, results = heldout_run
    conversations = {test.id for test, _, _ in results if len(test.turns) >= 2}
    mid_refusals = {test.id for test, step, _ in results if len(test.turns) >= 2 and step.expect_refusal}
    assert len(conversations) >= 15 and len(mid_refusals) >= 3


def test_expected_cases_are_cited_for_at_least_95_percent_of_answerable_turns(heldout_run):
    _, results = heldout_run
    answerable = [(test, step, a) for test, step, a in results if not step.expect_refusal]
    misses = [f"{test.id}: {step.question!r} cited {cited(a)}" for test, step, a in answerable if not right(step, a)]
    rate = 1 - len(misses) / len(answerable)
    print(f"held-out: right for {len(answerable) - len(misses)}/{len(answerable)} answerable turns ({rate:.1%}); "
          f"misses: {misses}")
    assert rate >= 0.95, misses


def test_off_topic_turns_are_refused_mid_conversation_and_nearly_always_alone(heldout_run):
    _, results = heldout_run
    answered = [f"{test.id}: {step.question!r} cited {cited(a)}" for test, step, a in results
                if step.expect_refusal and not a.refused]
    mid_conversation = [f"{test.id}: {step.question!r}" for test, step, a in results
                        if step.expect_refusal and not a.refused and len(test.turns) >= 2]
    assert mid_conversation == []
    assert answered == []


def test_turns_are_hardly_ever_refused_when_their_expected_case_ranks_first(heldout_run):
    _, results = heldout_run
    wrongly = [f"{test.id}: {step.question!r} ({a.gate.reason if a.gate else ''})" for test, step, a in results
               if not step.expect_refusal and a.refused and a.retrieved
               and a.retrieved[0] in step.expect_cases + step.expect_any]
    assert len(wrongly) <= 3, wrongly


def test_markers_and_citations_agree_one_for_one(heldout_run):
    _, results = heldout_run
    for test, _, answer in results:
        assert cited_ids(answer.answer) == cited(answer), test.id
