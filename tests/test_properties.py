"""Property-based tests of the two ways programs talk to casebot (issue 21): `casebot chat --jsonl` and
`POST /api/ask`, with arbitrary JSON values in every field and arbitrary Unicode questions. Never a traceback,
never a server error; `chat --jsonl` writes exactly one line per line read. Derandomised, so a failure found here
is found again on every machine."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from conftest import run_casebot

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
FIELDS = st.fixed_dictionaries({}, optional={"question": st.one_of(JSON_VALUES, st.text(max_size=200)),
                                             "conversation": JSON_VALUES, "filters": JSON_VALUES})
REQUESTS = st.one_of(FIELDS, JSON_VALUES)
# No shrinking: each example runs the real command or server, and a failing one is printed whole anyway.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, phases=PHASES, suppress_health_check=HEALTH)


@settings(max_examples=3, deadline=None, derandomize=True, phases=PHASES, suppress_health_check=HEALTH)
@given(lines=st.lists(REQUESTS, min_size=15, max_size=15))
def test_chat_jsonl_writes_one_line_per_line_read_whatever_each_holds(knowledge_settings, knowledge_bot, lines):
    stdin = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n"
    result = run_casebot("chat", "--jsonl", "--db", str(knowledge_settings.db), stdin=stdin)
    assert "Traceback" not in result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(replies) == len(lines)
    assert all("error" in reply or "answer" in reply for reply in replies), replies
    # exit 2 says some line was refused (each one named in its own reply line), 0 that none was
    assert result.returncode == (2 if any("error" in reply for reply in replies) else 0), result.stderr


@PROPERTY
@given(body=REQUESTS)
def test_the_ask_api_answers_or_names_what_is_wrong_never_a_server_error(server, body):
    request = urllib.request.Request(server + "api/ask", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            assert "answer" in json.load(response)
    except urllib.error.HTTPError as error:
        assert 400 <= error.code < 500, (error.code, body)
        assert json.load(error)["error"]["message"], body
