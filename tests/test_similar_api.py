"""`POST /api/similar` of `casebot serve` (bot/api.py): patients like mine over HTTP against a real server on a
loopback port, with the audit log on in full, which must still hold no vignette."""

from __future__ import annotations

import pytest

from bot.feedback import FeedbackStore, feedback_path
from conftest import casebot_server
from test_openai_api import post_json

VIGNETTE = "58M dcSSc ATA+, ILD progressing on MMF 3 g, FVC 61%, DLCO 40%, no PH on RHC"
MMF_CASES = {"ild-mmf-failure-nintedanib", "ild-mmf-plus-rituximab-combination"}


@pytest.fixture(scope="module")
def audited_server(knowledge_settings, knowledge_bot):
    with casebot_server(knowledge_settings.db, env={"CASEBOT_AUDIT": "full"}) as url:
        yield url


def test_similar_returns_the_profile_reasons_and_what_followed(audited_server):
    status, body = post_json(f"{audited_server}api/similar", {"vignette": VIGNETTE, "k": 3})
    assert status == 200, body
    assert body["profile"]["failed_therapies"] == ["mycophenolate mofetil"]
    assert body["profile"]["negated"] == ["pulmonary-hypertension"] and body["profile"]["subtype"] == "diffuse"
    assert body["understood_as"].startswith("age 45-59 · male · diffuse · lung · anti-Scl-70")
    matches = body["matches"]
    assert len(matches) == 3 and {m["case_id"] for m in matches} & MMF_CASES
    for match in matches:
        assert match["score"] == pytest.approx(sum(match["parts"].values()), abs=0.01)
        assert "failed mycophenolate mofetil" in match["shared"]
    [table] = body["followed"]
    cited = {cid for row in table["rows"] for ids in row["outcomes"].values() for cid in ids}
    assert table["failed"] == "mycophenolate mofetil" and cited <= {m["case_id"] for m in matches}


def test_a_corrected_profile_is_ranked_as_corrected(audited_server):
    _, read = post_json(f"{audited_server}api/similar", {"vignette": VIGNETTE})
    profile = read["profile"] | {"failed_therapies": ["CYC"]}
    status, body = post_json(f"{audited_server}api/similar", {"vignette": VIGNETTE, "profile": profile})
    assert status == 200, body
    assert body["profile"]["failed_therapies"] == ["cyclophosphamide"]
    assert all("failed cyclophosphamide" in m["shared"] for m in body["matches"])
    assert [t["failed"] for t in body["followed"]] == ["cyclophosphamide"]


def test_an_identifier_is_refused_and_bad_requests_are_named(audited_server):
    status, body = post_json(f"{audited_server}api/similar", {"vignette": "John Smith, MRN 12345678, dcSSc ILD"})
    assert status == 422 and "identifier" in body["error"]["message"] and body["error"]["param"] == "vignette"
    status, body = post_json(f"{audited_server}api/similar", {"vignette": "52F, seen today"})
    assert status == 422 and "Give at least one of" in body["error"]["message"]
    status, body = post_json(f"{audited_server}api/similar", {"vignette": VIGNETTE, "profile": {"organ": ["lung"]}})
    assert status == 400 and body["error"]["message"].startswith("profile.organ: Extra inputs are not permitted")
    status, body = post_json(f"{audited_server}api/similar", {"vignette": VIGNETTE, "profile": {"organs": ["liver"]}})
    assert status == 422 and "profile field 'organs': 'liver'" in body["error"]["message"]


def test_vignettes_are_not_audited_while_answers_are(audited_server, knowledge_settings):
    question = "Lung fibrosis progressing on MMF: what was added?"
    assert post_json(f"{audited_server}api/similar", {"vignette": VIGNETTE})[0] == 200
    assert post_json(f"{audited_server}api/ask", {"question": question})[0] == 200
    store = FeedbackStore(feedback_path(knowledge_settings))
    rows = [str(row) for row in store.audit_rows() + store.rows()]
    assert any(question in row for row in rows), "the audit is on: the answer is recorded"
    assert not any("ATA+" in row or "DLCO 40" in row for row in rows)
