"""The web app as clinicians use it: Debian's chromium, driven by Playwright, against a real `casebot serve`
over the shipped library. Screenshots of the main screens go to tests/artifacts/ (kept out of git)."""

from __future__ import annotations

import csv
import json
import re
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from playwright.sync_api import Browser, Page, expect

from bot.cases import Case, load_cases
from bot.conversation import CaseBot
from bot.feedback import FeedbackStore, feedback_path
from bot.lexicon import Lexicon
from bot.settings import load_settings
from bot.text import sentences, tokenize
from bot.web.chat import EXAMPLES
from bot.web.render import case_markdown
from conftest import ARTIFACTS, KNOWLEDGE, casebot_server, run_casebot, write_case

LOGIN = ("clinician", "correct-horse-battery")
RENAL = "Renal crisis not responding to ACE inhibitors: options?"
LUNG = "Lung fibrosis progressing on mycophenolate: what was added?"
FOLLOW_UP = "What came after that?"
# It names SSc: a question naming nothing at all is refused unless a filter anchors it (bot/gate.py nothing_asked).
BROAD = "What was tried when the first treatment failed in SSc patients?"
XSS = "<img src=x onerror=alert(1)>"


def open_app(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A fresh browser context (its own session) on the app; returns the page and the dialogs it raises."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.locator("#question textarea").wait_for()
    return page, dialogs


@pytest.fixture
def app(browser, server):
    page, dialogs = open_app(browser, server)
    yield page, dialogs
    page.context.close()


@pytest.fixture
def page(app) -> Page:
    return app[0]


def submit(page: Page, question: str) -> int:
    """Sends a question; returns its number in the chat (from 1)."""
    number = page.locator('#chat [data-testid="user"]').count() + 1
    page.locator("#question textarea").fill(question)
    page.locator("#question textarea").press("Enter")
    return number


def wait_answer(page: Page, number: int):
    """The answer to question `number`, once complete (its sources reach the panel when the last piece is in)."""
    page.locator("#sources .sources-head", has_text=re.compile(rf"Sources of answer {number}\b")).wait_for()
    return page.locator('#chat [data-testid="bot"]').nth(number - 1)


def ask(page: Page, question: str):
    return wait_answer(page, submit(page, question))


def chips(message) -> list[str]:
    """The cases an answer cites, in the order of their numbers, found as a reader finds them: each number
    links to its source in the panel (None for a number whose source the panel lacks)."""
    return message.evaluate("""(message) => [...new Set([...message.querySelectorAll('a.cite-num')]
        .map(link => link.getAttribute('href').slice(1)))]
        .map(id => document.querySelector('#sources section.source#' + CSS.escape(id))?.dataset.case ?? null)""")


def cited(answer) -> list[str]:
    return [citation.case_id for citation in answer.citations]


def choose(page: Page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{dropdown} input")).to_have_value(option)


@cache
def case_files() -> dict[str, Case]:
    """The shipped cases as read from their files, independently of the index and the app."""
    cases, _ = load_cases([KNOWLEDGE], Lexicon.load(KNOWLEDGE / "lexicon.yaml"))
    return {case.id: case for case in cases}


def squeeze(text: str) -> str:
    return " ".join(text.split())


def assert_whole_case(shown: str, case_id: str) -> None:
    """Every section of the case file is shown, with its text (compared as prose, sentence by sentence)."""
    case = case_files()[case_id]
    assert case.title in shown
    for heading, text in re.findall(r"^## (.+)\n([\s\S]*?)(?=^## |\Z)", case.body, re.MULTILINE):
        assert heading in shown
        assert all(squeeze(sentence) in squeeze(shown) for sentence in sentences(text)), heading


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_example_question_gets_an_answer_with_chips_and_its_sources_with_highlighted_passages(page, knowledge_bot):
    page.get_by_text(EXAMPLES[2], exact=True).click()
    assert EXAMPLES[2] == RENAL
    expect(page.locator("#question textarea")).to_have_value(RENAL)
    expected = knowledge_bot.ask(RENAL, "reference-example")
    assert not expected.refused
    message = wait_answer(page, submit(page, RENAL))

    assert chips(message) == cited(expected)  # every [case-id] a visible number, none invented, none lost
    assert message.locator("a.cite-num").first.is_visible()
    brackets = re.findall(r"\[[^\]]*\]", message.inner_text())
    assert brackets and all(re.fullmatch(r"\[\d+\]", bracket) for bracket in brackets)  # numbers, no case id
    assert "not a treatment recommendation" in message.inner_text()

    sources = page.locator("#sources")
    for citation in expected.citations:
        section = sources.locator(f'section.source[data-case="{citation.case_id}"]')
        assert citation.title in section.inner_text()
        shown = section.locator("blockquote.passage").all_inner_texts()
        assert shown == citation.passages  # verbatim, in order
    marked = {word.lower() for word in sources.locator("blockquote.passage mark").all_inner_texts()}
    assert {"renal", "crisis"} & marked  # the question's own words, found in the passages
    question_stems = set().union(*(alt for c in knowledge_bot.retriever.concepts(RENAL) for alt in c.alternatives))
    assert all(set(stems) & question_stems for stems in tokenize(sorted(marked)))  # and nothing else

    first = expected.citations[0]
    whole = sources.locator(f'section.source[data-case="{first.case_id}"] details.whole-case')
    assert not whole.locator("article.case").is_visible()
    whole.locator("summary").click()
    assert_whole_case(whole.locator("article.case").inner_text(), first.case_id)
    page.evaluate("document.querySelectorAll('#chat *').forEach(e => { e.scrollTop = 0; })")  # the answer's start
    screenshot(page, "chat")


def record_shown_texts(page: Page) -> None:
    """From now on, every distinct text the latest answer shows is kept in window.shownTexts, in order."""
    page.evaluate("""() => {
        window.shownTexts = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll('#chat [data-testid="bot"]');
            const text = answers.length ? answers[answers.length - 1].innerText : '';
            if (text && window.shownTexts[window.shownTexts.length - 1] !== text) window.shownTexts.push(text);
        }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
    }""")


def test_answer_streams_in_piece_by_piece(page):
    record_shown_texts(page)
    final = ask(page, LUNG).inner_text()
    shown = page.evaluate("window.shownTexts")
    assert shown[-1] == final
    assert "Searching the case library" in shown[0]  # the question is taken at once
    partial = [text for text in shown[1:-1] if text and len(text) < len(final)]
    assert partial, f"only the whole answer was ever shown: {shown}"
    assert any(text.split("\n")[0] in final for text in partial)  # pieces of the same answer, first block first


def test_follow_up_resolves_against_the_conversation_and_clear_chat_forgets_it(page):
    first = chips(ask(page, RENAL))
    follow = ask(page, FOLLOW_UP)
    assert "Understood as:" in follow.inner_text()
    assert chips(follow) and set(chips(follow)) <= set(first)

    page.locator("#clear").click()
    page.locator("#sources .sources-empty").wait_for()
    assert page.locator('#chat [data-testid="user"]').count() == 0
    fresh = ask(page, FOLLOW_UP)
    assert "Understood as:" not in fresh.inner_text()


def test_filter_restricts_the_cases_and_is_shown_in_the_answer(page, knowledge_bot):
    unfiltered = knowledge_bot.ask(BROAD, "reference-unfiltered")
    organs = knowledge_bot.retriever.cases
    assert any("kidney" not in organs[case_id].organs for case_id in cited(unfiltered))  # the filter has work to do

    choose(page, "filter-organ", "kidney")
    message = ask(page, BROAD)
    assert "filtered to: kidney" in message.inner_text()
    assert "filtered to: kidney" in page.locator("#sources").inner_text()
    shown = chips(message)
    assert shown and all("kidney" in organs[case_id].organs for case_id in shown)
    assert shown == cited(knowledge_bot.ask(BROAD, "reference-filtered", {"organ": "kidney"}))
    screenshot(page, "filtered")


def test_each_answer_keeps_its_own_citations_when_selected_again_and_in_the_export(page):
    renal = chips(ask(page, RENAL))
    lung = chips(ask(page, LUNG))
    assert renal and lung and not set(renal) & set(lung)
    panel = page.locator("#sources")

    def panel_cases() -> list[str]:
        return panel.locator("section.source").evaluate_all("sections => sections.map(s => s.dataset.case)")

    assert panel_cases() == lung
    page.locator('#chat [data-testid="bot"]').nth(0).click()  # scroll back to the first answer
    panel.locator(".sources-head", has_text="Sources of answer 1").wait_for()
    assert panel_cases() == renal
    page.locator('#chat [data-testid="user"]').nth(1).click()  # a question shows its own answer's sources
    panel.locator(".sources-head", has_text="Sources of answer 2").wait_for()
    assert panel_cases() == lung

    with page.expect_download() as download:
        page.locator("#export").click()
    assert download.value.suggested_filename.endswith(".md")
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    first, second = exported.split("\n## 2. ")
    assert RENAL in first and LUNG in second
    for section, own, other in ((first, renal, lung), (second, lung, renal)):
        assert all(f"[{case_id}]" in section for case_id in own)
        assert not any(f"[{case_id}]" in section for case_id in other)
    passage = panel.locator("blockquote.passage").first.inner_text()
    assert f"  > {passage}" in second


def test_feedback_is_stored_with_the_answer_and_exported_as_csv(page, knowledge_settings, tmp_path):
    comment = f"Please add the trial data ({tmp_path.name})"
    message = ask(page, RENAL)
    answer_cases = chips(message)
    message.hover()
    page.locator('#chat button[aria-label="Dislike"]').last.click()
    page.locator("#feedback-status", has_text="👎 stored").wait_for()
    page.locator('#chat button[aria-label="Like"]').last.click()  # a change of mind replaces the rating
    page.locator("#feedback-status", has_text="👍 stored").wait_for()
    page.locator("#comment textarea").fill(comment)
    page.locator("#send-comment").click()
    page.locator("#feedback-status", has_text="comment stored").wait_for()
    screenshot(page, "feedback")

    rows = [row for row in FeedbackStore(feedback_path(knowledge_settings)).rows() if row["comment"] == comment]
    assert len(rows) == 1
    row = rows[0]
    assert (row["question"], row["rating"], row["backend"]) == (RENAL, "up", "extractive")
    assert [c["case_id"] for c in json.loads(row["citations"])] == answer_cases
    assert "[" + answer_cases[0] + "]" in row["answer"] and row["time"]

    target = tmp_path / "feedback.csv"
    result = run_casebot("feedback", "export", str(target), "--db", str(knowledge_settings.db))
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout
    exported = [r for r in csv.DictReader(target.open(encoding="utf-8")) if r["comment"] == comment]
    assert [(r["question"], r["rating"]) for r in exported] == [(RENAL, "up")]


def test_library_tab_searches_the_cases_and_opens_one_in_full(page, knowledge_bot):
    cases = knowledge_bot.retriever.cases
    page.get_by_role("tab", name="Case library").click()
    table = page.locator("#library-table")
    table.locator('[data-testid="cell-0-0"]').wait_for()
    assert int(table.locator('[role="grid"]').get_attribute("aria-rowcount")) == len(cases) + 1  # + header

    matching = sorted(cid for cid, case in case_files().items() if "eculizumab" in (case.title + case.body).lower())
    assert 1 < len(matching) < len(cases)
    page.locator("#library-search textarea").fill("eculizumab")
    grid = table.locator(f'[role="grid"][aria-rowcount="{len(matching) + 1}"]')
    grid.wait_for()
    assert grid.locator('[data-col="0"]').all_inner_texts() == matching

    table.locator('[data-testid="cell-0-0"]').click()
    view = page.locator(f'#case-view article.case[data-case="{matching[0]}"]')
    view.wait_for()
    assert_whole_case(view.inner_text(), matching[0])
    screenshot(page, "library")


def test_typed_html_shows_as_text_and_runs_nothing(app):
    page, dialogs = app
    message = ask(page, XSS)
    question = page.locator('#chat [data-testid="user"]').last
    assert question.inner_text().strip() == XSS
    assert page.locator("#chat img, #sources img").count() == 0
    assert XSS in page.locator("#sources .sources-head").inner_text()
    assert message.inner_text()  # answered (a refusal), not broken
    page.wait_for_timeout(500)  # a broken <img> would have fired onerror by now
    assert dialogs == []
    handlers = page.evaluate("document.querySelectorAll('#chat [onerror], #sources [onerror]').length")
    assert handlers == 0


def test_two_browser_contexts_at_once_keep_their_conversations_apart(browser, server):
    (renal_page, _), (lung_page, _) = open_app(browser, server), open_app(browser, server)
    try:
        renal_number, lung_number = submit(renal_page, RENAL), submit(lung_page, LUNG)
        renal, lung = chips(wait_answer(renal_page, renal_number)), chips(wait_answer(lung_page, lung_number))
        assert renal and lung and not set(renal) & set(lung)

        lung_follow = ask(lung_page, FOLLOW_UP)
        renal_follow = ask(renal_page, FOLLOW_UP)
        assert chips(lung_follow) and set(chips(lung_follow)) <= set(lung)
        assert chips(renal_follow) and set(chips(renal_follow)) <= set(renal)
        assert LUNG not in renal_page.locator("#chat").inner_text()
        assert RENAL not in lung_page.locator("#chat").inner_text()
    finally:
        renal_page.context.close()
        lung_page.context.close()


@pytest.fixture(scope="module")
def generating_server(knowledge_settings, knowledge_bot, smollm2):
    """The app answering through a real local model (SmolLM2-135M in process), kept to short drafts."""
    env = {"CASEBOT_LLM": f"llamacpp:{smollm2}", "CASEBOT_LLM_MAX_TOKENS": "60"}
    with casebot_server(knowledge_settings.db, env=env) as url:
        yield url


def test_a_generating_model_is_shown_writing_then_replaced_by_the_checked_answer(browser, generating_server):
    page, _ = open_app(browser, generating_server)
    try:
        record_shown_texts(page)
        message = ask(page, LUNG)
        drafts = [text for text in page.evaluate("window.shownTexts") if text.startswith("The model is writing")]
        assert len(drafts) >= 2 and len(drafts[-1]) > len(drafts[0])  # the draft grew as the model wrote
        assert "The model is writing" not in message.inner_text()
        cases = page.locator("#sources section.source").evaluate_all("sections => sections.map(s => s.dataset.case)")
        assert set(chips(message)) == set(cases)  # what is finally shown cites exactly the checked citations
    finally:
        page.context.close()


@pytest.fixture(scope="module")
def login_server(knowledge_settings, knowledge_bot):
    with casebot_server(knowledge_settings.db, env={"CASEBOT_AUTH": ":".join(LOGIN)}) as url:
        yield url


def test_with_casebot_auth_the_chat_and_the_api_need_a_login(browser, login_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(login_server)
        password = page.locator('input[type="password"]')
        password.wait_for()
        assert page.locator("#question").count() == 0
        screenshot(page, "login")

        def log_in(user: str, secret: str) -> None:
            page.locator('input[type="text"]').fill(user)
            password.fill(secret)
            password.press("Enter")

        log_in(LOGIN[0], "wrong-password")
        page.get_by_text(re.compile("incorrect", re.IGNORECASE)).wait_for()
        assert page.locator("#question").count() == 0

        log_in(*LOGIN)
        page.locator("#question textarea").wait_for()
        assert chips(ask(page, RENAL))
    finally:
        context.close()

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            login_server + "gradio_api/call/ask", data=json.dumps({"data": [RENAL, "x"]}).encode(),
            headers={"Content-Type": "application/json"}), timeout=30)
    assert refused.value.code == 401
    with pytest.raises(Exception, match="(?i)login|auth|401"):
        Client(login_server, verbose=False)
    client = Client(login_server, auth=LOGIN, verbose=False)
    answer = client.predict(RENAL, "api-login", api_name="/ask")
    assert answer["citations"] and not answer["refused"]
    with pytest.raises(AppError, match="the question is empty"):
        client.predict("   ", "api-login", api_name="/ask")


def test_a_case_split_into_several_chunks_opens_whole(tmp_path):
    """Long sections are stored as overlapping chunks; the case opened from the index reads as written."""
    long_text = " ".join(f"Sentence {n} describes visit {n} and the lung function measured then." for n in range(60))
    write_case(tmp_path / "library" / "cases", id="long-case", next_text=long_text)
    bot = CaseBot(load_settings(db=tmp_path / "chroma", knowledge=tmp_path / "library"), log=lambda message: None)
    side = bot.retriever.side
    assert sum(passage["section"] == "Next therapy" for passage in side.case_passages("long-case")) > 2

    rebuilt = case_markdown(side, "long-case")
    assert f"## Next therapy\n\n{long_text}\n\n## Outcome" in rebuilt
    assert rebuilt.count("Sentence 30 describes") == 1


def test_a_malformed_casebot_auth_stops_the_server_with_a_clear_message(knowledge_settings):
    result = run_casebot("serve", "--db", str(knowledge_settings.db), env={"CASEBOT_AUTH": "clinician-secret"})
    assert result.returncode == 2
    assert "CASEBOT_AUTH must be user:password" in result.stderr
    assert "clinician-secret" not in result.stderr + result.stdout


def test_pathways_tab_plots_and_tables_what_came_after_a_failure_as_the_cli_does(page, knowledge_settings):
    failed = "mycophenolate mofetil"
    result = run_casebot("pathways", "--failed", "MMF", "--organ", "lung", "--json", "--db", str(knowledge_settings.db))
    assert result.returncode == 0, result.stderr
    expected = {row["next_therapy"]: sorted(cid for ids in row["outcomes"].values() for cid in ids)
                for row in json.loads(result.stdout)["rows"]}
    assert len(expected) >= 2

    page.get_by_role("tab", name="Pathways").click()
    choose(page, "pathway-failed", failed)
    choose(page, "pathway-organ", "lung")
    table = page.locator("#pathway-table table")
    expect(table.locator("tbody tr")).to_have_count(len(expected))
    numbered = {item.locator(".source-number").inner_text(): item.get_attribute("data-case")  # [1] -> its case
                for item in page.locator("#pathway-cited li").all()}
    shown = {row.locator("td").first.inner_text():
             sorted(numbered[n] for n in row.locator(".cite-chip").all_inner_texts())
             for row in table.locator("tbody tr").all()}
    assert shown == expected
    assert f"After {failed} failed" in page.locator("#pathway-table").inner_text()
    expect(page.locator("#pathway-plot canvas, #pathway-plot svg").first).to_be_visible()

    cases = page.locator("#pathway-cases")
    first = cases.locator('[data-testid="cell-0-0"]')
    first.wait_for()
    case_id = first.inner_text()
    assert case_id in {cid for ids in expected.values() for cid in ids}
    first.click()
    view = page.locator(f'#pathway-case article.case[data-case="{case_id}"]')
    view.wait_for()
    assert_whole_case(view.inner_text(), case_id)
    screenshot(page, "pathways")


UPLOADED = "uploaded-calcinosis-case"


@pytest.fixture(scope="module")
def library_server(tmp_path_factory):
    """The app over a small library of its own, which the test adds a case to (the shipped one stays as it is)."""
    folder = tmp_path_factory.mktemp("upload")
    write_case(folder / "knowledge" / "cases", id="kept-renal-case", title="Renal crisis after ACE inhibitors",
               organs="kidney", failed="ACE inhibitors", next="plasma exchange", outcome="stabilised",
               resistance="Kidney function fell despite ACE inhibitors.")
    with casebot_server(folder / "db", env={"CASEBOT_KNOWLEDGE": str(folder / "knowledge")}) as url:
        yield url, folder / "knowledge" / "cases"


def test_a_case_uploaded_in_the_browser_is_checked_confirmed_and_cited_at_once(browser, library_server, tmp_path):
    url, cases_dir = library_server
    question = "Calcinosis growing despite topical nitrates: what was tried?"
    named = write_case(tmp_path / "named", id="named-case", presentation="Mr John Smith presented with calcinosis.")
    good = write_case(tmp_path / "good", id=UPLOADED, title="Calcinosis cutis treated with intralesional injections",
                      organs="skin", failed="topical nitrates", next="intralesional injections", outcome="partial",
                      resistance="The calcinosis deposits kept growing despite topical nitrates.",
                      next_text="Intralesional injections were given into the calcinosis deposits.")
    page, _ = open_app(browser, url)
    try:
        assert not chips(ask(page, question)), "the library cannot answer before the case is added"
        page.get_by_role("tab", name="Case library").click()
        page.locator("#add-case").get_by_text("Add a case to the library").click()
        upload = page.locator("#add-file input[type=file]")

        upload.set_input_files(str(named))
        page.locator("#add-check-file").click()
        expect(page.locator("#add-refused")).to_contain_text("possible name with title 'Mr John Smith'")
        expect(page.locator("#add-confirm")).to_be_disabled()

        page.locator("#add-file").get_by_label("Clear").click()
        upload.set_input_files(str(good))
        page.locator("#add-check-file").click()
        expect(page.locator("#add-checked")).to_contain_text(f"{UPLOADED}.md can be added")
        expect(page.locator(f'#add-preview article.case[data-case="{UPLOADED}"]')).to_contain_text(
            "Intralesional injections were given")
        assert not (cases_dir / f"{UPLOADED}.md").exists(), "nothing is written before the confirmation"
        screenshot(page, "add-case")
        page.locator("#add-confirm").click()
        expect(page.locator("#add-done")).to_contain_text(f"Added {UPLOADED}")
        assert (cases_dir / f"{UPLOADED}.md").read_text() == good.read_text()
        expect(page.locator("#library-table")).to_contain_text(UPLOADED)

        page.get_by_role("tab", name="Chat").click()
        assert chips(ask(page, question))[:1] == [UPLOADED]
    finally:
        page.context.close()
