"""The web chat, served for real by `casebot serve`, answering through its named `ask` API endpoint; how it
shows citations, and its start."""

from __future__ import annotations

import html
import json
import re
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gradio as gr
from gradio_client import Client

from bot import embedding
from bot.web.app import serve
from bot.web.library import library_rows
from bot.web.chat import forget, write_export
from bot.web.render import answer_blocks, numbering, sources_html
from bot.web.startup import Startup
from conftest import PROJECT_ROOT, casebot_server


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


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def upload(url: str, name: str, content: bytes) -> int:
    """POSTs one file to Gradio's upload route as a browser does; the HTTP status."""
    boundary = "casebot-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: text/markdown\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_an_upload_larger_than_a_case_file_can_be_is_refused_before_it_is_stored(server):
    """Issue 21, item 15: with no login set, /gradio_api/upload took files of any size."""
    assert upload(server, "case.md", b"# A case\n" * 100) == 200
    assert upload(server, "huge.md", b"x" * (11 * 1024 * 1024)) == 413  # settings.max_upload_mb is 10


def test_nul_and_other_control_characters_separate_words_instead_of_merging_them(server):
    """Issue 21, item 15: "renal\\x00crisis" was read as "renalcrisis"."""
    typed = "Renal\x00crisis\x00not responding to ACE\u00a0inhibitors:\x0boptions?"
    meant = "Renal crisis not responding to ACE inhibitors: options?"
    answer = post_json(server + "api/ask", {"question": typed})
    assert answer["question"] == meant
    assert "seed-src-ace-plasma-exchange" in [c["case_id"] for c in answer["citations"]]
    assert Client(server, verbose=False).predict(typed, "web-nul", api_name="/ask")["question"] == meant


def test_a_conversation_export_is_private_to_the_server_and_removed_with_its_conversation(knowledge_bot):
    """Issue 21, item 15: exports were written world-readable to a shared /tmp/casebot-exports and never deleted."""
    record = {"question": "Renal crisis?", "filters": {}, "answer": None, "error": "not answered"}
    path = write_export([record], "export-test")
    assert "Renal crisis?" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert Path(tempfile.gettempdir()) / "casebot-exports" not in path.parents
    forget(Startup.of(knowledge_bot), "export-test")  # the session closed, or its chat cleared
    assert not path.exists()
    written = subprocess.run([sys.executable, "-c", "from bot.web.chat import write_export; "
                              "print(write_export([], 'export-at-exit'))"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=300)
    assert written.returncode == 0, written.stderr
    assert not Path(written.stdout.strip()).exists(), "the process's exports outlived it"
    # stopped as a service is stopped (SIGTERM from systemd, docker or kill), as `casebot serve` sets it up
    serving = subprocess.Popen([sys.executable, "-c", "import time; from bot.web.app import exit_on_terminate; "
                                "from bot.web.chat import write_export; exit_on_terminate(); "
                                "print(write_export([], 'export-at-stop'), flush=True); time.sleep(120)"],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    stopped = Path(serving.stdout.readline().strip())
    assert stopped.exists()
    serving.terminate()
    assert serving.wait(timeout=60) == 0
    assert not stopped.exists(), "a stopped server's exports outlived it"


def test_logins_from_an_address_are_refused_for_a_while_after_ten_wrong_passwords(knowledge_settings, knowledge_bot):
    """Issue 21, item 15: 300 wrong passwords in 0.6 s met no lockout."""
    def login(url: str, password: str) -> tuple[int, str, str | None]:
        form = urllib.parse.urlencode({"username": "clinician", "password": password}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "login", data=form), timeout=60) as response:
                return response.status, response.read().decode(), None
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers.get("Retry-After")

    with casebot_server(knowledge_settings.db, env={"CASEBOT_AUTH": "clinician:correct-horse"}) as url:
        assert login(url, "correct-horse")[0] == 200
        assert [login(url, f"guess-{n}")[0] for n in range(10)] == [400] * 10
        status, body, retry_after = login(url, "correct-horse")
        assert status == 429 and int(retry_after) > 0
        assert json.loads(body)["detail"].startswith("too many wrong passwords from 127.0.0.1: logins from this "
                                                     "address are refused for 5 more minutes")
