"""The web API's `ask` without a conversation id: each client gets its own conversation (issue 21, item 6)."""

from __future__ import annotations

from gradio_client import Client

RENAL = "Renal crisis not responding to ACE inhibitors: what was tried?"
FOLLOW_UP = "What came after that?"


def test_api_clients_that_omit_the_conversation_id_never_share_one(server):
    """Before: both clients fell into one default conversation, so B's follow-up resolved against A's cases."""
    first, second = Client(server, verbose=False), Client(server, verbose=False)
    asked = first.predict(RENAL, api_name="/ask")
    assert not asked["refused"]
    other = second.predict(FOLLOW_UP, api_name="/ask")
    assert other["standalone_question"] == other["question"], "B's follow-up reached into A's conversation"
    own = first.predict(FOLLOW_UP, api_name="/ask")
    assert own["standalone_question"] != own["question"], "A's follow-up resolves against A's own answer"
    assert {c["case_id"] for c in own["citations"]} <= {c["case_id"] for c in asked["citations"]}
