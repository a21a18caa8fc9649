"""The "Patients like mine" tab as a clinician uses it: Debian's chromium, driven by Playwright, against a real
`casebot serve` over the shipped library with the audit log on in full. Paste a vignette, correct the profile
read from it, see the ranked cases with their reasons, open one; an identifier is refused and nothing is kept."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from bot.feedback import FeedbackStore, feedback_path
from conftest import casebot_server
from test_browser import assert_whole_case, open_app, screenshot
from test_browser_citations import BROKEN_WORDS

VIGNETTE = "52F, dcSSc 3 y, anti-Scl-70+, NSIP, FVC 58% falling 8% in a year on MMF 3 g, mRSS 22, no PH on RHC"
WAIT = 60_000  # ms: a ranking waits its turn on a machine shared with other tests
CYC_CASES = {"ild-cyc-failure-rituximab", "seed-dcssc-ild-cyc-ahsct"}


@pytest.fixture(scope="module")
def audited_server(knowledge_settings, knowledge_bot):
    with casebot_server(knowledge_settings.db, env={"CASEBOT_AUDIT": "full"}) as url:
        yield url


@pytest.fixture
def page(browser, audited_server) -> Page:
    page, _ = open_app(browser, audited_server)
    page.get_by_role("tab", name="Patients like mine").click()
    page.locator("#similar-vignette textarea").wait_for()
    yield page
    page.context.close()


def tokens(page: Page, field: str) -> list[str]:
    return page.locator(f"#{field} .token span").all_inner_texts()


def cell(page: Page, row: int, column: int):
    return page.locator(f'#similar-cases [data-testid="cell-{row}-{column}"]')


def ranked(page: Page, count: int = 3) -> list[str]:
    """The case ids of the first rows of the table of similar cases, best first."""
    return [cell(page, row, 1).inner_text().strip() for row in range(count)]


def test_paste_correct_the_profile_see_the_reasons_and_open_a_case(page, knowledge_settings):
    page.locator("#similar-vignette textarea").fill(VIGNETTE)
    page.locator("#similar-read").click()
    expect(page.locator("#similar-understood")).to_contain_text("failed: mycophenolate mofetil", timeout=WAIT)
    expect(page.locator("#similar-failed .token").first).to_be_visible(timeout=WAIT)
    assert tokens(page, "similar-failed") == ["mycophenolate mofetil"]
    assert tokens(page, "similar-organs") == ["lung"] and tokens(page, "similar-antibodies") == ["anti-Scl-70"]
    assert tokens(page, "similar-negated") == ["pulmonary-hypertension"]
    expect(page.locator("#similar-subtype input")).to_have_value("diffuse", timeout=WAIT)
    measures = page.locator("#similar-measures textarea, #similar-measures input").first
    expect(measures).to_have_value("FVC 58, mRSS 22", timeout=WAIT)
    expect(page.locator("#similar-results")).to_contain_text("matched: failed mycophenolate mofetil", timeout=WAIT)

    # The clinician corrects the profile: it was cyclophosphamide that failed, not MMF.
    page.locator("#similar-failed .token", has_text="mycophenolate mofetil").locator(".token-remove").click()
    page.locator("#similar-failed input").fill("cyclophosphamide")
    page.get_by_role("option", name="cyclophosphamide", exact=True).click()
    assert tokens(page, "similar-failed") == ["cyclophosphamide"]
    page.locator("#similar-find").click()
    expect(page.locator("#similar-understood")).to_contain_text("failed: cyclophosphamide", timeout=WAIT)
    results = page.locator("#similar-results")
    expect(results).to_contain_text("After cyclophosphamide failed, the library records:", timeout=WAIT)
    expect(results).not_to_contain_text("mycophenolate mofetil failed", timeout=WAIT)
    expect(page.locator('#similar-cases [role="grid"]')).to_have_attribute("aria-rowcount", "6", timeout=WAIT)
    assert set(ranked(page)) & CYC_CASES, ranked(page)
    expect(cell(page, 0, 4)).to_contain_text("failed cyclophosphamide")  # why it matched
    assert results.locator("table").first.evaluate(BROKEN_WORDS) == []  # the table scrolls; no word broken inside
    screenshot(page, "similar-ranked")

    case_id = ranked(page, 1)[0]
    cell(page, 0, 2).click()
    case = page.locator(f'#similar-case article.case[data-case="{case_id}"]')
    expect(case).to_be_visible(timeout=WAIT)
    assert_whole_case(case.inner_text(), case_id)

    store = FeedbackStore(feedback_path(knowledge_settings))
    assert not any("NSIP" in str(row) for row in store.audit_rows() + store.rows()), "the vignette was stored"


def test_an_identifier_is_refused_with_the_reason_and_clears_the_profile(page):
    page.locator("#similar-vignette textarea").fill(VIGNETTE)
    page.locator("#similar-read").click()
    expect(page.locator("#similar-failed .token").first).to_be_visible(timeout=WAIT)
    page.locator("#similar-vignette textarea").fill("Jane Smith, DOB 12/03/1970, " + VIGNETTE)
    page.locator("#similar-read").click()
    expect(page.locator("#similar-understood")).to_contain_text("patient identifier, so it was not searched",
                                                                timeout=WAIT)
    expect(page.locator("#similar-understood")).to_contain_text("date of birth", timeout=WAIT)
    expect(page.locator("#similar-failed .token")).to_have_count(0, timeout=WAIT)
    expect(page.locator("#similar-cases")).not_to_contain_text("ild-", timeout=WAIT)
