"""The chat page on a hospital laptop (1366x768) and a phone (390x844), in Debian's chromium against a real
`casebot serve`: numbered citations with their case's title, a click leading to the case in the sources panel,
pathway tables that stay readable, the question box and the new answer's start in view, the sources panel
within reach on a phone, bold text drawn in a system font, and a question asked while the server warms up."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from bot.pathways import OUTCOME_ORDER, pathway
from bot.web.app import SANS, SCRIPT, STYLE, build
from bot.web.library import library_rows
from bot.web.pathways import OUTCOME_COLOURS
from bot.web.startup import Startup
from conftest import ARTIFACTS, free_port

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
SIZES = pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
LUNG = "Lung fibrosis progressing on mycophenolate: what was added?"  # answered with a pathway table
RENAL = "Renal crisis not responding to ACE inhibitors: options?"

# Words of the table cells (header and body) drawn on more than one line: a word broken inside.
BROKEN_WORDS = """(table) => {
  const broken = [];
  for (const cell of table.querySelectorAll('th, td')) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.textContent.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
        if (lines.size > 1) broken.push(word[0]);
      }
    }
  }
  return broken;
}"""


# Whether a source's heading is in sight: inside the panel's visible part and on the screen.
SHOWN = """(id) => {
  const source = document.getElementById(id);
  const panel = source.closest('.sources').getBoundingClientRect(), top = source.getBoundingClientRect().top;
  return top >= panel.top - 1 && top < panel.bottom - 20 && top >= 0 && top < window.innerHeight - 20;
}"""


def open_page(browser: Browser, url: str, size: dict) -> Page:
    page = browser.new_context(viewport=size).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator("#question textarea").wait_for()
    return page


@pytest.fixture
def pages(browser, server):
    opened: list[Page] = []

    def at(size: dict) -> Page:
        opened.append(open_page(browser, server, size))
        return opened[-1]

    yield at
    for page in opened:
        page.context.close()


def open_tab(page: Page, name: str) -> None:
    """Opens the app's tab `name`; on a phone the tabs that do not fit are behind "More tabs"."""
    page.locator('[role="tablist"]').first.wait_for()
    tab = page.get_by_role("tab", name=name)
    if tab.is_visible():
        tab.click()
    else:
        page.get_by_role("button", name="More tabs").click()
        page.locator(".overflow-dropdown button", has_text=name).click()


def ask(page: Page, question: str):
    """The complete answer to `question` (its sources reach the panel when the last piece is in)."""
    number = page.locator('#chat [data-testid="user"]').count() + 1
    page.locator("#question textarea").fill(question)
    page.locator("#question textarea").press("Enter")
    page.locator("#sources .sources-head", has_text=re.compile(rf"Sources of answer {number}\b")).wait_for()
    return page.locator('#chat [data-testid="bot"]').nth(number - 1)


def box(locator) -> dict:
    return locator.evaluate("e => { const r = e.getBoundingClientRect();"
                            " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }")


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


@SIZES
def test_citations_are_numbers_titled_with_their_case_and_lead_to_it_in_the_sources_panel(pages, size, knowledge_bot):
    page = pages(size)
    expected = knowledge_bot.ask(LUNG, "reference-numbered")
    titles = {citation.case_id: citation.title for citation in expected.citations}
    message = ask(page, LUNG)

    text = message.inner_text()
    brackets = re.findall(r"\[[^\]]*\]", text)
    assert brackets and all(re.fullmatch(r"\[\d+\]", bracket) for bracket in brackets)
    assert not any(case_id in text for case_id in titles)  # no case id is shown in the answer itself
    assert sorted({int(bracket[1:-1]) for bracket in brackets}) == list(range(1, len(titles) + 1))

    links = message.locator("a.cite-num")
    for link in links.all():
        section = page.locator("#sources " + link.get_attribute("href"))
        assert section.locator(".source-number").inner_text() == link.inner_text()  # the same number heads it
        assert link.get_attribute("title") == titles[section.get_attribute("data-case")]  # shown on hover
        assert titles[section.get_attribute("data-case")] in section.inner_text()

    first = links.first
    first.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # reached from the keyboard, the number shows its title too
    assert first.evaluate("e => document.activeElement === e && e.matches(':focus-visible')")
    assert first.evaluate("e => getComputedStyle(e, '::after').content") == f'"{first.get_attribute("title")}"'

    last = links.filter(has_text=f"[{len(titles)}]").first  # the case furthest down the panel
    target = last.get_attribute("href")[1:]
    assert not page.evaluate(SHOWN, target)
    url = page.url
    last.click()
    page.wait_for_function(SHOWN, arg=target)
    assert page.url == url  # the panel scrolled to the case; the page did not navigate away
    screenshot(page, f"chat-citations-{size['width']}")


@SIZES
def test_pathway_tables_keep_words_whole_and_stay_inside_the_bubble(pages, size):
    page = pages(size)
    message = ask(page, LUNG)
    table = message.locator("table")
    table.scroll_into_view_if_needed()
    assert table.evaluate(BROKEN_WORDS) == []
    bubble = box(message)
    assert box(table)["right"] <= bubble["right"] + 1  # wider content scrolls inside the table instead
    fits = table.evaluate("t => t.scrollWidth <= t.clientWidth || getComputedStyle(t).overflowX === 'auto'")
    assert fits
    for link in message.locator("a.cite-num").all():
        assert link.evaluate("e => e.getClientRects().length") == 1  # on one line
        if not link.evaluate("e => !!e.closest('table')"):
            rect = box(link)
            assert bubble["left"] <= rect["left"] and rect["right"] <= bubble["right"]
    table.screenshot(path=ARTIFACTS / f"chat-table-{size['width']}.png")


@SIZES
def test_pathways_number_their_cases_key_every_outcome_drawn_and_read_a_misspelt_therapy(pages, size,
                                                                                          knowledge_bot):
    """Issue 18, item 10: the bars' key shows every outcome drawn; the table cites cases by number with their
    titles, leading to the case in the list below; a misspelt therapy is read as the chat reads it."""
    cases = knowledge_bot.retriever.cases
    result = pathway(cases.values(), knowledge_bot.lexicon, "mycophenolate mofetil")
    drawn = [o for o in OUTCOME_ORDER if any(o in row.outcomes for row in result.rows)]
    assert len(drawn) >= 2
    page = pages(size)
    open_tab(page, "Pathways")
    table = page.locator("#pathway-table")
    expect(table).to_contain_text("failed, the library records")  # the page load's table comes first
    failed = page.locator("#pathway-failed input")
    failed.fill("mycophenolte")
    failed.press("Enter")
    expect(table).to_contain_text("Read “mycophenolte” as mycophenolate mofetil.")
    expect(table.locator("tbody tr")).to_have_count(len(result.rows))
    legend = page.locator("#pathway-legend li")
    expect(legend).to_have_text(drawn)
    for item in legend.all():
        colour = item.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
        red, green, blue = (int(OUTCOME_COLOURS[item.get_attribute("data-outcome")][i:i + 2], 16) for i in (1, 3, 5))
        assert colour == f"rgb({red}, {green}, {blue})"
    links = table.locator("a.cite-num")
    numbers = {cid: n for n, cid in enumerate(result.case_ids(), start=1)}
    assert links.count() == sum(len(ids) for row in result.rows for ids in row.outcomes.values())
    assert {link.inner_text() for link in links.all()} == {f"[{n}]" for n in numbers.values()}
    assert table.locator("table").evaluate(BROKEN_WORDS) == []
    last = links.last
    number = int(last.inner_text().strip("[]"))
    case_id = next(cid for cid, n in numbers.items() if n == number)
    expect(last).to_have_attribute("title", cases[case_id].title)
    expect(page.locator("#pathway-cited li")).to_have_count(len(numbers))
    last.scroll_into_view_if_needed()
    last.click()
    target = page.locator(f"#pathway-case-{number}")
    expect(target).to_have_attribute("data-case", case_id)
    expect(target).to_be_in_viewport()
    page.screenshot(path=ARTIFACTS / f"pathways-{size['width']}x{size['height']}.png", full_page=True)


def test_the_library_finds_a_brand_name_and_add_a_case_stays_on_the_first_screen(pages, knowledge_bot):
    """Issue 18, item 11, on a ward laptop: "CellCept" finds the mycophenolate cases, and "Add a case" is in
    sight with a long case opened."""
    expected = [row[0] for row in library_rows(knowledge_bot.retriever.side, "mycophenolate mofetil",
                                               knowledge_bot.lexicon)]
    page = pages(LAPTOP)
    open_tab(page, "Case library")
    table = page.locator("#library-table")
    table.locator('[data-testid="cell-0-0"]').wait_for()
    page.locator("#library-search textarea").fill("CellCept")
    grid = table.locator(f'[role="grid"][aria-rowcount="{len(expected) + 1}"]')
    grid.wait_for()
    expect(table.locator('[data-testid="cell-0-0"]')).to_have_text(expected[0])
    table.locator('[data-testid="cell-0-0"]').click()
    page.locator(f'#case-view article.case[data-case="{expected[0]}"]').wait_for()
    expect(page.locator("#add-case")).to_be_in_viewport()
    screenshot(page, "library-1366x768")


@SIZES
def test_the_question_box_is_on_the_first_screen(pages, size):
    page = pages(size)
    page.locator("#chat").wait_for()
    assert page.evaluate("window.scrollY") == 0
    rect = box(page.locator("#question textarea"))
    assert 0 <= rect["top"] and rect["bottom"] <= size["height"]
    screenshot(page, f"chat-load-{size['width']}")


def test_a_new_answer_is_shown_from_its_start(pages):
    page = pages(LAPTOP)
    ask(page, RENAL)
    message = ask(page, LUNG)  # longer than the chat is high
    question = page.locator('#chat [data-testid="user"]').last
    chat = box(page.locator("#chat"))
    answer = box(message)
    assert answer["bottom"] > chat["bottom"]  # the answer's end is below, still to read
    assert chat["top"] <= box(question)["top"] < chat["top"] + 80  # the question heads the chat
    assert answer["top"] < chat["bottom"] - 100  # and the answer's start is in view below it
    screenshot(page, "chat-new-answer-1366")


def test_on_a_phone_the_sources_panel_comes_straight_after_the_question_box(pages):
    page = pages(PHONE)
    ask(page, RENAL)
    question, sources = box(page.locator("#question")), box(page.locator("#sources"))
    assert 0 <= sources["top"] - question["bottom"] < 60
    examples = page.get_by_text("Example questions").first
    assert box(examples)["top"] > sources["top"]


def test_bold_text_is_drawn_in_a_system_font_not_the_bundled_semibold(pages):
    page = pages(LAPTOP)
    message = ask(page, RENAL)
    family = message.locator("strong").first.evaluate("e => getComputedStyle(e).fontFamily")
    assert family.split(",")[0].strip().strip("'\"") == SANS[0]
    assert "Source Sans" not in family
    bundled = page.evaluate("[...document.fonts].filter(f => f.family.includes('Source Sans')).length")
    assert bundled == 0  # the theme no longer declares the bundled font at all


# Each screen, and what shows once it has its content.
SCREENS = {"Chat": "#question textarea", "Case library": '#library-table [data-testid="cell-0-0"]',
           "Pathways": "#pathway-legend li", "Patients like mine": "#similar-cases [data-testid='cell-0-0']",
           "Teach": "#teach-walk .teach-stage"}
VIGNETTE = "52F, dcSSc 3 y, anti-Scl-70+, FVC 58% falling on MMF 3 g, no PH on RHC"


@SIZES
def test_no_screen_is_wider_than_a_laptop_or_a_phone(pages, size):
    """Every tab with its content at 1366x768 and 390x844: the page never scrolls sideways (wide tables scroll
    inside themselves). Each screen is saved in tests/artifacts/ at both sizes."""
    page = pages(size)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, content in SCREENS.items():
        open_tab(page, name)
        if name == "Patients like mine":
            page.locator("#similar-vignette textarea").fill(VIGNETTE)
            page.locator("#similar-read").click()
        elif name == "Teach":
            page.locator("#teach-random").click()
        page.locator(content).first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], f"{name}: {width} px wide at {size['width']} px"
        slug = name.lower().replace(" ", "-")
        page.screenshot(path=ARTIFACTS / f"screen-{slug}-{size['width']}x{size['height']}.png", full_page=True)


@pytest.fixture
def warming_app(knowledge_bot):
    """The app in this process while its bot is still loading; the test says when it is made."""
    startup = Startup(knowledge_bot.settings)
    demo = build(startup)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=STYLE, js=SCRIPT)
    yield f"http://127.0.0.1:{port}/", lambda: startup.made(knowledge_bot)
    startup.made(knowledge_bot)
    demo.close()


def test_a_question_asked_while_the_server_warms_up_is_told_so_and_answered_once_it_is_ready(browser, warming_app):
    url, make_bot = warming_app
    page = open_page(browser, url, LAPTOP)
    try:
        expect(page.locator("#startup progress")).to_be_visible()  # the page is up, its library still loading
        page.locator("#question textarea").fill(RENAL)
        page.locator("#question textarea").press("Enter")
        message = page.locator('#chat [data-testid="bot"]').last
        expect(message).to_contain_text("still loading the case library")
        make_bot()
        page.locator("#sources .sources-head", has_text="Sources of answer 1").wait_for()
        expect(message.locator("a.cite-num").first).to_be_visible()
        assert "still loading" not in message.inner_text()
        expect(page.locator("#startup progress")).to_have_count(0)  # the bar leaves once the bot is made
    finally:
        page.context.close()
