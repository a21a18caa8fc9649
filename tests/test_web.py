"""The web chat, served for real by `casebot serve`, answering through its named `ask` API endpoint."""

from __future__ import annotations

import urllib.request

from gradio_client import Client


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
