"""Twenty clinicians at once through the web app's API (loopback only, bounded): no errors, no cross-talk.

Each simulated user asks about a different case, then a follow-up ("what had she failed before that?")
that must resolve to that user's own case. Latency figures go to tests/artifacts/load.txt."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client

from bot.answer import cited_ids
from bot.conversation import CaseBot
from bot.evaluation import load_suite
from bot.intake import add, check
from bot.settings import load_settings
from conftest import PROJECT_ROOT, casebot_server, write_case

USERS = 20
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


def first_questions(bot: CaseBot) -> list[tuple[str, str]]:
    """Twenty single-case questions from the eval sets, each answered alone (one at a time) with a different
    case first: the baseline the simultaneous users must reproduce."""
    chosen: dict[str, str] = {}
    for path in sorted((PROJECT_ROOT / "evals").glob("*.yaml")):
        for test in load_suite(Path(path)).tests:
            step = test.steps()[0]
            if len(chosen) == USERS or len(step.expect_cases) != 1 or step.filters or step.expect_cases[0] in chosen:
                continue
            alone = bot.ask(step.question, f"alone-{len(chosen)}-{step.expect_cases[0]}")
            if alone.citations and alone.citations[0].case_id == step.expect_cases[0]:
                chosen[step.expect_cases[0]] = step.question
    return [(question, case_id) for case_id, question in chosen.items()]


def test_twenty_simultaneous_conversations_keep_to_their_own_cases(knowledge_settings, knowledge_bot):
    questions = first_questions(knowledge_bot)
    assert len(questions) == USERS
    with casebot_server(knowledge_settings.db) as url:
        # Connecting is not what is measured: each user's client is made first, the questions then go at once.
        clients = [Client(url, verbose=False, httpx_kwargs={"timeout": 300}) for _ in range(USERS)]

        def user(number: int) -> tuple[list[float], str, list[str], str]:
            client = clients[number]
            question, _ = questions[number]
            latencies = []
            started = time.perf_counter()
            first = client.predict(question, f"user-{number}", api_name="/ask")
            latencies.append(time.perf_counter() - started)
            started = time.perf_counter()
            follow = client.predict("What had the patient failed before that?", f"user-{number}", api_name="/ask")
            latencies.append(time.perf_counter() - started)
            own = first["citations"][0]["case_id"] if first["citations"] else ""
            return latencies, own, [c["case_id"] for c in follow["citations"]], follow["standalone_question"]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=USERS) as pool:
            results = list(pool.map(user, range(USERS), timeout=600))
        wall = time.perf_counter() - started
    for number, (_, own, followed, standalone) in enumerate(results):
        assert own == questions[number][1], f"user {number} was answered from {own!r}, alone from {questions[number][1]}"
        assert followed == [own], f"user {number}: follow-up cited {followed}, expected their own case {own}"
        assert standalone != "What had the patient failed before that?"
    latencies = sorted(l for result in results for l in result[0])
    p50, p95 = latencies[len(latencies) // 2], latencies[int(0.95 * (len(latencies) - 1))]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.txt").write_text(f"{USERS} users x 2 requests in {wall:.1f} s; "
                                        f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms\n")
    print((ARTIFACTS / "load.txt").read_text())


def test_answers_stay_whole_while_a_case_is_added(tmp_path):
    """Web users are answered on several threads; a case added meanwhile (Case library tab) must not mix two
    versions of the library into one answer or break a question in flight."""
    knowledge = tmp_path / "knowledge"
    for number in range(6):
        write_case(knowledge / "cases", id=f"lung-case-{number}", title=f"Lung fibrosis case {number} after MMF",
                   failed="MMF", next="rituximab", outcome="improved",
                   resistance=f"Lung fibrosis progressed despite MMF in patient {number}.")
    bot = CaseBot(load_settings(db=tmp_path / "db", knowledge=knowledge), log=lambda m: None)
    new_case = write_case(tmp_path / "upload", id="added-while-answering", title="Digital ulcers after bosentan",
                          organs="vascular", failed="bosentan", next="iloprost", outcome="partial",
                          resistance="Digital ulcers kept recurring despite bosentan.")
    stop = threading.Event()

    def asker(number: int) -> int:
        answered = 0
        while not stop.is_set() and answered < 200:
            answer = bot.ask("Lung fibrosis progressing despite MMF: what was tried?", f"asker-{number}-{answered}")
            assert not answer.refused
            assert cited_ids(answer.answer) == [c.case_id for c in answer.citations]
            answered += 1
        return answered

    with ThreadPoolExecutor(max_workers=4) as pool:
        askers = [pool.submit(asker, number) for number in range(4)]
        time.sleep(1)
        add(check(new_case.name, new_case.read_bytes(), bot.settings, bot.lexicon, set(bot.retriever.cases)),
            bot.settings, bot.lexicon)
        time.sleep(1)
        stop.set()
        counts = [future.result(timeout=300) for future in askers]
    assert all(count > 0 for count in counts)
    answer = bot.ask("Digital ulcers recurring despite bosentan: what next?", "after-add")
    assert [c.case_id for c in answer.citations][:1] == ["added-while-answering"]
