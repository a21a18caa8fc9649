"""The Teach tab as an educator uses it: Debian's chromium, driven by Playwright, against a real `casebot serve`
over the shipped library. A case walked through to the reveal, quiz questions answered with the score kept,
and the session exported as a Markdown and a PDF handout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from bot.settings import load_settings
from bot.teaching import Teaching
from conftest import ARTIFACTS, KNOWLEDGE
from test_browser_citations import open_tab

CASE = "ild-mmf-failure-nintedanib"
GROUP_ANSWER = "<b>Add nintedanib</b> and keep MMF"
SEED = 3


@pytest.fixture(scope="module")
def teaching() -> Teaching:
    """Teaching mode over the case files, independently of the server."""
    return Teaching.from_files(load_settings(knowledge=KNOWLEDGE))[0]


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    page.get_by_role("tab", name="Teach").click()
    page.locator("#teach-start").wait_for()
    yield page
    context.close()


def choose(page: Page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{dropdown} input")).to_have_value(option)


def download(page: Page, fmt: str, copy: str = "Educator's copy") -> Path:
    """Exports the session's handout (`copy`, in `fmt`) and downloads it through its link, as a user does."""
    page.locator("#handout-copy label").filter(has_text=copy).locator("input").check()
    page.locator("#handout-format").get_by_label(fmt, exact=True).check()
    page.locator("#handout-export").click()
    kind = "student copy" if copy == "Student copy" else "educator's copy"
    expect(page.locator("#handout-status")).to_contain_text(f"Handout ready ({fmt}, {kind})")
    link = page.locator('#handout-file a[data-testid="download-link"]')
    name = "casebot-handout" + ("-student" if copy == "Student copy" else "")
    expect(link).to_have_attribute("download", f"{name}.{'md' if fmt == 'Markdown' else fmt.lower()}")
    with page.expect_download() as done:
        link.click()
    return Path(done.value.path())


def test_a_case_walked_to_the_reveal_a_quiz_scored_and_the_session_exported(page, teaching):
    walk = teaching.walkthrough(CASE)
    view = page.locator("#teach-walk")
    choose(page, "teach-case", teaching.label(CASE))
    page.locator("#teach-start").click()

    # Stage by stage, with neither the title nor the id on show: both name the therapy that followed.
    for number, stage in enumerate(walk.before, start=1):
        expect(view.locator("section.teach-stage")).to_have_count(number)
        shown = view.locator("section.teach-stage").nth(number - 1)
        expect(shown.locator("h4")).to_have_text(stage.heading)
        assert " ".join(stage.text.split()) in " ".join(shown.inner_text().split())
        if number < len(walk.before):
            expect(page.locator("#teach-group-answer")).to_be_hidden()
            page.locator("#teach-next").click()
    expect(view.locator(".teach-pause h4")).to_have_text("What would you consider next?")
    expect(page.locator("#teach-next")).to_be_hidden()
    assert CASE not in view.inner_text() and walk.case.title not in view.inner_text()
    assert view.locator(".cite-chip").count() == 0
    assert "nintedanib" not in view.inner_text().lower()

    page.locator("#teach-group-answer textarea").fill(GROUP_ANSWER)
    page.locator("#teach-reveal").click()
    reveal = view.locator(".teach-reveal")
    expect(reveal.locator("section.teach-stage h4")).to_have_text([f"{s.heading} [1]" for s in walk.reveal])
    expect(reveal.locator("h4 a.cite-num").first).to_have_attribute("title", walk.case.title)
    assert " ".join(walk.reveal[0].text.split()) in " ".join(reveal.inner_text().split())
    expect(view.locator(".teach-group-answer")).to_have_text(GROUP_ANSWER)  # typed HTML shown as text
    assert view.locator(".teach-group-answer b").count() == 0
    expect(view.locator("h3")).to_have_text(f"[1] {walk.case.title}")
    expect(view.locator(".source-ref").first).to_have_text(CASE)
    expect(view.locator('section.teach-stage[data-stage="Teaching points"]')).to_contain_text("Nintedanib slows")
    related = view.locator(".teach-related li")
    expect(related).to_have_count(len(walk.related))
    assert [item.get_attribute("data-case") for item in related.all()] == [r.case_id for r in walk.related]
    assert related.locator(".source-ref").all_inner_texts() == [r.case_id for r in walk.related]
    assert related.locator(".source-number").all_inner_texts() == [f"[{n}]" for n in range(2, len(walk.related) + 2)]
    expect(page.locator("#teach-reveal")).to_be_hidden()

    # The quiz: the same questions as `casebot quiz --seed 3`, scored as they are answered.
    expected = teaching.quiz(n=5, seed=SEED)
    page.locator("#quiz-seed input").fill(str(SEED))
    page.locator("#quiz-start").click()
    question = page.locator("#quiz-question")
    expect(question).to_contain_text("Question 1 of 5")
    expect(question).to_contain_text(expected[0].question)
    options = page.locator("#quiz-options")
    expect(options.locator("label")).to_have_text(expected[0].options)
    options.get_by_label(expected[0].answer, exact=True).check()
    page.locator("#quiz-answer").click()
    expect(page.locator("#quiz-score")).to_contain_text("Score: 1 of 1")
    expect(page.locator("#quiz-feedback")).to_contain_text("Correct.")
    expect(page.locator("#quiz-feedback .cite-chip")).to_have_text(expected[0].case_id)

    page.locator("#quiz-next").click()
    expect(question).to_contain_text("Question 2 of 5")
    expect(question).to_contain_text(expected[1].question)
    wrong = next(option for option in expected[1].options if option != expected[1].answer)
    options.get_by_label(wrong, exact=True).check()
    page.locator("#quiz-answer").click()
    expect(page.locator("#quiz-score")).to_contain_text("Score: 1 of 2")
    expect(page.locator("#quiz-feedback")).to_contain_text(f"Not quite: the answer is {expected[1].answer}.")
    page.locator("#quiz-answer").click()  # a question counts once
    expect(page.locator("#quiz-score")).to_contain_text("Score: 1 of 2")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "teach.png", full_page=True)

    # The handout: the case walked through with the group's answer, the questions answered, the key.
    handout = download(page, "Markdown").read_text(encoding="utf-8")
    assert f"[{CASE}]" in handout and "> <b>Add nintedanib</b> and keep MMF" in handout
    assert expected[0].question in handout and expected[1].question in handout
    assert f"Group's choice: {expected[0].answer} (correct)." in handout
    assert f"Group's choice: {wrong} (wrong)." in handout
    assert all(f"- [{r.case_id}]" in handout for r in walk.related)

    printed = "\n".join(p.extract_text() for p in PdfReader(download(page, "PDF")).pages)
    assert CASE in printed and "What would you consider next?" in printed

    # The students' copy: the case by its label up to the pause, the questions without the key.
    student = download(page, "Markdown", "Student copy").read_text(encoding="utf-8")
    assert teaching.label(CASE) in student and expected[1].question in student
    assert all(f"- {letter}. {option}" in student for letter, option in zip("ABCD", expected[1].options))
    assert "Answer key" not in student and "Group's choice" not in student and "Add nintedanib" not in student
    assert not [case.id for case in teaching.cases if case.id in student]
    assert walk.case.title not in student and " ".join(walk.reveal[0].text.split()) not in " ".join(student.split())
    printed = "\n".join(p.extract_text() for p in PdfReader(download(page, "PDF", "Student copy")).pages)
    assert "What would you consider next?" in printed and "Answer key" not in printed and CASE not in printed


def test_a_random_case_is_drawn_by_organ_and_an_impossible_draw_is_explained(page):
    choose(page, "teach-organ", "kidney")
    page.locator("#teach-random").click()
    expect(page.locator("#teach-walk section.teach-stage")).to_have_count(1)
    expect(page.locator("#teach-walk .teach-facts")).to_contain_text("kidney")

    choose(page, "teach-therapy", "nintedanib")  # no kidney case records it
    page.locator("#teach-random").click()
    expect(page.locator("#teach-status")).to_contain_text("no case in the library has both the organ 'kidney' "
                                                          "and the therapy 'nintedanib'")


@pytest.mark.parametrize("width,height", [(1366, 768), (390, 844)])
def test_the_teach_tab_shows_no_case_id_before_the_reveal_and_has_projector_type(browser, server, teaching,
                                                                              width, height):
    """Issue 18, item 7: the picker and the walk-through name cases neutrally until the reveal; item 9: a
    projector's type."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    open_tab(page, "Teach")
    area = page.locator("#teach-area")
    page.locator("#teach-case input").click()
    offered = page.get_by_role("option").all_inner_texts()
    assert offered == [teaching.label(case.id) for case in teaching.cases]
    ids = [case.id for case in teaching.cases]
    page.get_by_role("option", name=teaching.label(CASE), exact=True).click()
    page.locator("#teach-start").click()
    for number in range(1, len(teaching.walkthrough(CASE).before) + 1):
        expect(area.locator("section.teach-stage")).to_have_count(number)
        if number < len(teaching.walkthrough(CASE).before):
            page.locator("#teach-next").click()
    expect(area.locator(".teach-pause h4")).to_have_text("What would you consider next?")
    expect(area.locator(".teach-walk h3")).to_have_text(teaching.label(CASE))
    shown = area.inner_html()
    assert not [case_id for case_id in ids if case_id in shown]
    assert teaching.walkthrough(CASE).case.title not in shown
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"teach-pause-{width}x{height}.png", full_page=True)

    stage = area.locator("section.teach-stage p").first
    before = float(stage.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    page.locator("#teach-projector input").check()
    expect(area).to_have_class(re.compile(r"\bprojector\b"))
    after = float(stage.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    assert after >= 1.4 * before, (before, after)
    page.screenshot(path=ARTIFACTS / f"teach-projector-{width}x{height}.png", full_page=True)

    page.locator("#teach-reveal").click()
    expect(area.locator(".teach-reveal")).to_be_visible()
    assert CASE in area.inner_text()  # the reveal names the case
    context.close()
