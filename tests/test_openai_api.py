"""The HTTP API of `casebot serve` (bot/api.py): OpenAI's chat API driven by the real `openai` client, and the
plain JSON `POST /api/ask`, against a real server on a loopback port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from bot.answer import cited_ids
from conftest import casebot_server

RENAL = "Renal crisis not responding to ACE inhibitors: what was tried?"
RENAL_CASE = "seed-src-ace-plasma-exchange"
FOLLOW_UP = "What came after that?"
OFF_TOPIC = "What is the right amoxicillin dose for acute otitis media in a child?"
API_KEY = "test-key-0f3a"


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}v1", api_key=key, max_retries=0, timeout=120)


def ask(client_: openai.OpenAI, *messages: dict, **options):
    return client_.chat.completions.create(model="casebot", messages=list(messages), **options)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def post_json(url: str, body: object, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_models_lists_casebot(server):
    assert [model.id for model in client(server).models.list()] == ["casebot"]


def test_a_question_is_answered_with_its_citations_and_the_answer_object(server):
    reply = ask(client(server), user(RENAL))
    text = reply.choices[0].message.content
    answer = reply.casebot  # the answer object travels in the response's `casebot` field
    assert answer["refused"] is False and answer["question"] == RENAL
    cited = [c["case_id"] for c in answer["citations"]]
    assert RENAL_CASE in cited
    assert answer["answer"] in text
    assert set(cited_ids(text)) == set(cited), "every case cited in the reply is listed with its source"
    for citation in answer["citations"]:
        assert f"- **[{citation['case_id']}]** {citation['title']}" in text
        assert all(f"  > {passage}" in text for passage in citation["passages"])
    assert reply.choices[0].finish_reason == "stop"


def test_streaming_sends_the_same_reply_in_pieces_and_the_answer_object_at_the_end(server):
    plain = ask(client(server), user(RENAL)).choices[0].message.content
    chunks = list(ask(client(server), user(RENAL), stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == plain
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert RENAL_CASE in [c["case_id"] for c in last.casebot["citations"]]


def test_a_follow_up_is_carried_by_the_messages(server):
    api = client(server)
    first = ask(api, user(RENAL))
    follow = ask(api, user(RENAL), {"role": "assistant", "content": first.choices[0].message.content},
                 user(FOLLOW_UP)).casebot
    assert follow["standalone_question"] != follow["question"] == FOLLOW_UP
    assert follow["citations"] and not follow["refused"]
    assert {c["case_id"] for c in follow["citations"]} <= {c["case_id"] for c in first.casebot["citations"]}
    alone = ask(api, user(FOLLOW_UP)).casebot  # the server keeps no state: no history, nothing to refer to
    assert alone["standalone_question"] == alone["question"]


def test_a_refusal_is_passed_through(server):
    reply = ask(client(server), user(OFF_TOPIC))
    assert reply.casebot["refused"] is True and reply.casebot["citations"] == []
    assert reply.choices[0].message.content == reply.casebot["answer"]
    assert cited_ids(reply.choices[0].message.content) == []


def test_filters_come_from_casebot_filters_and_a_bad_one_is_named(server, knowledge_bot):
    reply = ask(client(server), user("What was tried when the disease kept progressing?"),
                extra_body={"casebot_filters": {"organ": "kidney"}})
    cited = [c["case_id"] for c in reply.casebot["citations"]]
    assert cited and all("kidney" in knowledge_bot.retriever.cases[cid].organs for cid in cited)
    with pytest.raises(openai.BadRequestError, match="therapy 'unobtainium'"):
        ask(client(server), user(RENAL), extra_body={"casebot_filters": {"therapy": "unobtainium"}})


def test_bad_requests_get_a_message_naming_the_problem(server):
    with pytest.raises(openai.NotFoundError, match="the model 'gpt-4o' does not exist"):
        client(server).chat.completions.create(model="gpt-4o", messages=[user(RENAL)])
    with pytest.raises(openai.BadRequestError, match="the question is empty"):
        ask(client(server), user("   "))
    with pytest.raises(openai.BadRequestError, match="the last message must be the user's question"):
        ask(client(server), user(RENAL), {"role": "assistant", "content": "an answer"})


def test_api_ask_returns_the_answer_object_and_keeps_a_named_conversation(server):
    status, first = post_json(f"{server}api/ask", {"question": RENAL, "conversation": "http-1"})
    assert status == 200 and RENAL_CASE in [c["case_id"] for c in first["citations"]]
    assert set(first) >= {"question", "standalone_question", "answer", "citations", "refused", "backend",
                          "unsupported", "warnings", "timings_ms"}
    status, follow = post_json(f"{server}api/ask", {"question": FOLLOW_UP, "conversation": "http-1"})
    assert status == 200 and follow["standalone_question"] != follow["question"]
    status, error = post_json(f"{server}api/ask", {"questoin": RENAL})
    assert status == 400 and "question: Field required" in error["error"]["message"]


@pytest.fixture(scope="module")
def locked_server(knowledge_settings, knowledge_bot):
    """`casebot serve` with a web login and an API key."""
    with casebot_server(knowledge_settings.db, env={"CASEBOT_AUTH": "clinician:pass-word",
                                                    "CASEBOT_API_KEY": API_KEY}) as url:
        yield url


def test_with_auth_on_the_api_needs_the_bearer_key(locked_server):
    with pytest.raises(openai.AuthenticationError, match="a valid API key is required"):
        ask(client(locked_server, "wrong-key"), user(RENAL))
    with pytest.raises(openai.AuthenticationError):
        client(locked_server, "wrong-key").models.list()
    status, error = post_json(f"{locked_server}api/ask", {"question": RENAL})
    assert status == 401 and error["error"]["code"] == "invalid_api_key"

    reply = ask(client(locked_server, API_KEY), user(RENAL))
    assert RENAL_CASE in [c["case_id"] for c in reply.casebot["citations"]]
    status, answer = post_json(f"{locked_server}api/ask", {"question": RENAL}, key=API_KEY)
    assert status == 200 and answer["citations"]


def test_with_a_web_login_and_no_api_key_the_api_is_closed(knowledge_settings, knowledge_bot):
    with casebot_server(knowledge_settings.db, env={"CASEBOT_AUTH": "clinician:pass-word"}) as url:
        with pytest.raises(openai.AuthenticationError, match="no API key is set on the server"):
            ask(client(url, "any-key"), user(RENAL))
        status, error = post_json(f"{url}api/ask", {"question": RENAL}, key="any-key")
        assert status == 401 and error["error"]["code"] == "api_closed"
