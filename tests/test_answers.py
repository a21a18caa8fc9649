"""Answers from the shipped library: cited, verbatim, gated, filtered, and aware of the conversation."""

from __future__ import annotations

import json
import re

import pytest

from bot.answer import cited_ids
from bot.conversation import QuestionError
from bot.retrieval import FilterError
from conftest import run_casebot


def case_text(bot, case_id: str) -> str:
    path = bot.retriever.cases[case_id].path
    return re.sub(r"\s+", " ", open(path, encoding="utf-8").read())


@pytest.mark.parametrize("question, case_id, therapy", [
    ("Diffuse SSc whose lung fibrosis kept progressing despite several rounds of cyclophosphamide: what next?",
     "seed-dcssc-ild-cyc-ahsct", "stem cell transplantation"),
    ("Limited SSc with Raynaud's and pulmonary hypertension not controlled by vasodilators and ERAs",
     "seed-lcssc-raynaud-pah-rituximab", "rituximab"),
    ("Scleroderma renal crisis still worsening on ACE inhibitors: what was tried?",
     "seed-src-ace-plasma-exchange", "plasma exchange"),
])
def test_the_seed_resistance_stories_are_answered_with_their_case(knowledge_bot, question, case_id, therapy):
    answer = knowledge_bot.ask(question, conversation=case_id)
    assert not answer.refused
    assert case_id in [c.case_id for c in answer.citations]
    assert therapy in answer.answer.lower()


def test_off_topic_question_is_refused_plainly_with_what_the_library_covers(knowledge_bot):
    answer = knowledge_bot.ask("What is the right amoxicillin dose for acute otitis media in a child?", "offtopic")
    assert answer.refused and answer.citations == [] and cited_ids(answer.answer) == []
    assert "no case" in answer.answer and "lung (" in answer.answer and "kidney (" in answer.answer


def test_every_statement_is_cited_and_every_passage_is_verbatim_from_its_case(knowledge_bot):
    answer = knowledge_bot.ask("ILD progressing on MMF: what was added?", "verbatim")
    lines = [line for line in answer.answer.splitlines() if line.strip()]
    note = lines[-1]
    assert "not a treatment recommendation" in note and answer.answer.count("not a treatment recommendation") == 1
    statements = [line for line in lines[:-1] if not line.startswith(("| next therapy", "|---")) and not line.endswith(":")]
    assert all(cited_ids(line) for line in statements), "a statement of the answer carries no [case-id]"
    assert cited_ids(answer.answer) == [c.case_id for c in answer.citations]
    for citation in answer.citations:
        assert citation.passages
        for passage in citation.passages:
            assert passage.replace("(", "[").replace(")", "]") in case_text(knowledge_bot, citation.case_id) \
                or passage in case_text(knowledge_bot, citation.case_id)


def test_abbreviations_are_expanded_through_the_lexicon(knowledge_bot):
    answer = knowledge_bot.ask("SRC despite ACEi - anyone given eculizumab?", "abbrev")
    cited = [c.case_id for c in answer.citations]
    assert any(cid.startswith("src-") and "eculizumab" in cid for cid in cited), cited


def test_filters_apply_before_ranking(knowledge_bot):
    answer = knowledge_bot.ask("What was tried when first-line treatment failed?", "filtered", {"organ": "kidney"})
    assert answer.citations
    assert all("kidney" in knowledge_bot.retriever.cases[c.case_id].organs for c in answer.citations)
    died = knowledge_bot.ask("Which cases ended in death?", "filtered-died", {"outcome": "died", "organ": "lung"})
    assert all(knowledge_bot.retriever.cases[c.case_id].outcome == "died" for c in died.citations)
    with pytest.raises(FilterError, match="unknown filter 'colour'"):
        knowledge_bot.ask("anything", "bad-filter", {"colour": "red"})
    with pytest.raises(FilterError, match="unknown organ 'liver'"):
        knowledge_bot.ask("anything", "bad-filter", {"organ": "liver"})


def test_a_filtered_search_finds_the_chunks_chromas_own_filtered_search_finds(knowledge_bot):
    """Filtered similarity comes from the side index's copy of the vectors: it must rank as Chroma would."""
    retriever = knowledge_bot.retriever.snapshot()
    allowed = retriever.allowed_cases({"organ": "lung"})
    vector = retriever.embedder.embed_query("lung fibrosis progressing despite mycophenolate")
    ours = retriever._dense(vector, allowed)
    chroma = retriever.index.collection.query(query_embeddings=[vector], n_results=len(ours),
                                              where={"case_id": {"$in": sorted(allowed)}}, include=["distances"])
    assert [retriever.side.chunk_ids[row] for row in ours][:10] == chroma["ids"][0][:10]
    assert list(ours.values())[:10] == pytest.approx([1 - d for d in chroma["distances"][0][:10]], abs=1e-4)


def test_follow_up_resolves_against_the_conversation_and_not_another(knowledge_bot):
    first = knowledge_bot.ask("Tell me about the CAR-T case where ILD progressed despite CYC, MMF and nintedanib",
                              "follow-a")
    assert first.citations[0].case_id == "ild-cart-merkt-2024"
    other = knowledge_bot.ask("Renal crisis treated with eculizumab after plasma exchange failed", "follow-b")
    follow = knowledge_bot.ask("What had she failed before that?", "follow-a")
    assert follow.standalone_question != follow.question
    assert [c.case_id for c in follow.citations] == ["ild-cart-merkt-2024"]
    assert "mycophenolate" in follow.answer.lower()
    follow_b = knowledge_bot.ask("Did she survive?", "follow-b")
    assert [c.case_id for c in follow_b.citations] == [other.citations[0].case_id]


def test_a_new_topic_in_the_same_conversation_is_not_forced_onto_the_old_case(knowledge_bot):
    knowledge_bot.ask("Tell me about the SCOT transplant case", "topic-change")
    answer = knowledge_bot.ask("What about GAVE, then?", "topic-change")
    assert answer.citations and all(c.case_id.startswith("gi-") for c in answer.citations)


@pytest.mark.parametrize("question, message", [
    ("", "empty"), ("   \n\t ", "empty"), ("x" * 100_000, "100000 characters"),
    (b"\xff\xfe\x00binary", "not UTF-8"), (None, "must be text"),
])
def test_bad_questions_get_a_clear_message(knowledge_bot, question, message):
    with pytest.raises(QuestionError, match=message):
        knowledge_bot.ask(question, "bad")


def test_chat_jsonl_keeps_conversations_apart_and_answers_in_order(knowledge_settings, knowledge_bot):
    lines = [
        {"question": "Tell me about the CAR-T case where ILD progressed despite CYC, MMF and nintedanib",
         "conversation": "a"},
        {"question": "Renal crisis: eculizumab given after plasma exchange failed, and the patient died",
         "conversation": "b"},
        {"question": "What had she failed before that?", "conversation": "a"},
        {"question": "What else had been tried before that?", "conversation": "b"},
        {"question": ""},
    ]
    result = run_casebot("chat", "--jsonl", "--db", str(knowledge_settings.db),
                         stdin="\n".join(json.dumps(line) for line in lines) + "\n")
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 5
    assert answers[2]["citations"][0]["case_id"] == "ild-cart-merkt-2024"
    conversation_b = {c["case_id"] for c in answers[1]["citations"]}
    assert answers[3]["citations"] and {c["case_id"] for c in answers[3]["citations"]} <= conversation_b
    assert "line 5" in answers[4]["error"] and "empty" in answers[4]["error"]
    assert result.returncode == 2
    for answer in answers[:4]:
        assert set(answer) >= {"question", "standalone_question", "answer", "citations", "refused", "backend",
                               "unsupported", "warnings", "timings_ms"}
        assert cited_ids(answer["answer"]) == [c["case_id"] for c in answer["citations"]]
