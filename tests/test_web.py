"""The web chat, served for real by `casebot serve`, answering through its named `ask` API endpoint; how it
shows citations, and its start."""

from __future__ import annotations

import html
import re
import urllib.request

import gradio as gr
from gradio_client import Client

from bot import embedding
from bot.web.app import serve
from bot.web.library import library_rows
from bot.web.render import answer_blocks, numbering, sources_html


def test_page_is_served_on_loopback(server):
    with urllib.request.urlopen(server, timeout=10) as response:
        assert "casebot" in response.read().decode()


def test_ask_endpoint_returns_the_answer_object_and_keeps_conversations(server):
    client = Client(server, verbose=False)
    first = client.predict("Renal crisis not responding to ACE inhibitors: what was tried?", "web-1", api_name="/ask")
    assert first["refused"] is False
    assert "seed-src-ace-plasma-exchange" in [c["case_id"] for c in first["citations"]]
    follow = client.predict("What came after that?", "web-1", api_name="/ask")
    assert follow["standalone_question"] != follow["question"]
    assert {c["case_id"] for c in follow["citations"]} <= {c["case_id"] for c in first["citations"]}
    fresh = client.predict("What came after that?", "web-2", api_name="/ask")
    assert fresh["standalone_question"] == fresh["question"]


def test_the_chat_numbers_citations_in_order_of_first_mention_and_the_panel_uses_the_same_numbers(knowledge_bot):
    answer = knowledge_bot.ask("Lung fibrosis progressing on mycophenolate: what was added?", "web-numbers")
    assert len(answer.citations) >= 3
    numbers = numbering(answer)
    first_mentions = list(dict.fromkeys(re.findall(r"\[([a-z0-9-]+)\]", answer.answer)))
    assert list(numbers) == first_mentions and list(numbers.values()) == list(range(1, len(numbers) + 1))

    shown = "".join(answer_blocks(answer, {}, turn=4))
    for case_id, number in numbers.items():
        assert f"[{case_id}]" not in shown and case_id not in shown  # no raw marker, no id on show
        title = html.escape(next(c.title for c in answer.citations if c.case_id == case_id))
        assert f'href="#source-5-{number}" title="{title}">&#91;{number}&#93;</a>' in shown
    assert f"[{answer.citations[0].case_id}]" in answer.answer  # the answer object keeps its markers

    record = {"question": answer.question, "filters": {}, "answer": answer.model_dump(), "highlight": []}
    panel = sources_html(record, 4, knowledge_bot.retriever.side)
    order = re.findall(r'<section class="source" id="source-5-(\d+)" data-case="([a-z0-9-]+)"', panel)
    assert order == [(str(number), case_id) for case_id, number in numbers.items()]


def test_serve_shows_the_page_at_once_and_loads_the_embedding_model_before_answering(knowledge_settings,
                                                                                   knowledge_bot, monkeypatch):
    """The first clinician's question must not wait for the model: it is loaded while the page is up already."""
    steps = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: steps.append(
        ("page served", kwargs["prevent_thread_lock"], embedding._model.cache_info().currsize)))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: steps.append(
        ("warmed up", embedding._model.cache_info().currsize)))
    embedding._model.cache_clear()
    serve(knowledge_settings)
    assert steps == [("page served", True, 0), ("warmed up", 1)]  # served without blocking, then warmed


def test_library_search_reads_brand_names_and_abbreviations_as_the_chat_does(knowledge_bot):
    """Issue 18, item 11: "CellCept" found no case although the chat understood it."""
    side, lexicon = knowledge_bot.retriever.side, knowledge_bot.lexicon
    by_name = library_rows(side, "mycophenolate mofetil", lexicon)
    assert len(by_name) >= 5
    assert library_rows(side, "CellCept", lexicon) == by_name == library_rows(side, "MMF", lexicon)
    lung = library_rows(side, "cellcept lung", lexicon)
    assert lung and {row[0] for row in lung} < {row[0] for row in by_name}
    assert library_rows(side, "src-", lexicon) and library_rows(side, "CellCept zzzz", lexicon) == []
