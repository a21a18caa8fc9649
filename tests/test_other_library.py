"""The relevance gate is relative to the library loaded: pointed at 1,000 abstracts about other diseases,
it answers their questions (citing the right abstract) and still refuses what none of them covers."""

from __future__ import annotations

import pytest

from abstracts import write_abstracts
from bot.conversation import CaseBot
from bot.settings import load_settings


@pytest.fixture(scope="module")
def abstracts_bot(tmp_path_factory):
    library = tmp_path_factory.mktemp("abstracts")
    facts = write_abstracts(library / "cases")
    bot = CaseBot(load_settings(db=tmp_path_factory.mktemp("abstracts-db") / "chroma", knowledge=library),
                  log=lambda m: None)
    return bot, facts


def test_all_thousand_abstracts_are_indexed(abstracts_bot):
    bot, facts = abstracts_bot
    assert len(bot.retriever.cases) == len(facts) == 1000


@pytest.mark.parametrize("number", [3, 141, 502, 777, 998])
def test_a_question_about_one_abstract_cites_it(abstracts_bot, number):
    bot, facts = abstracts_bot
    fact = facts[number]
    question = (f"What did the {fact['design']} of {fact['intervention']} in {fact['population']} "
                f"with {fact['condition']} find?")
    answer = bot.ask(question, f"abstract-{number}")
    assert not answer.refused, question
    assert fact["id"] in [c.case_id for c in answer.citations], (question, answer.retrieved[:5])


def test_a_question_no_abstract_covers_is_refused(abstracts_bot):
    bot, _ = abstracts_bot
    answer = bot.ask("Scleroderma renal crisis not responding to ACE inhibitors: was plasma exchange tried?", "ssc")
    assert answer.refused and answer.citations == []
    assert "1000 cases, for example" in answer.answer
