"""The first start of `casebot serve` over an empty index, in Debian's chromium (issue 18, item 6): the page is
served at once with a progress bar of the cases indexed, a question asked meanwhile is refused politely with
that count and goes back to its box, the HTTP API answers 503 with the same message, and once the library is
ready the bar leaves and the question is answered. Screenshots of the indexing page at 1366x768 and 390x844."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from playwright.sync_api import Page, expect

from conftest import ARTIFACTS, casebot_server

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
RENAL = "Renal crisis not responding to ACE inhibitors: options?"
READY_TIMEOUT_MS = 600_000  # the shipped library's first index on 2 busy cores, then the model and the gate
SHOWN_MS = 60_000  # the page's first events wait their turn on a machine busy indexing (and running other tests)


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "api/status", timeout=10) as response:
        return json.load(response)


def open_page(browser, url: str, size: dict) -> Page:
    page = browser.new_context(viewport=size).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator("#question textarea").wait_for()
    return page


def test_a_first_start_serves_the_page_at_once_and_refuses_questions_with_the_indexing_progress(browser, tmp_path):
    with casebot_server(tmp_path / "chroma", ready=False) as url:
        deadline = time.monotonic() + 120
        while not (now := status(url))["phase"] == "indexing" or not now["cases"]:  # the page is up before that
            assert now["phase"] in ("loading", "indexing") and time.monotonic() < deadline, now
            time.sleep(0.2)
        page = open_page(browser, url, LAPTOP)
        try:
            banner = page.locator("#startup")
            expect(banner.locator("progress")).to_be_visible()
            expect(banner).to_contain_text(re.compile(r"still being indexed: \d+ of 87 cases"), timeout=SHOWN_MS)

            page.locator("#question textarea").fill(RENAL)
            page.locator("#question textarea").press("Enter")
            message = page.locator('#chat [data-testid="bot"]').last
            expect(message).to_have_text(re.compile(r"^\s*The case library is still being indexed: \d+ of 87 cases"),
                                         timeout=SHOWN_MS)
            expect(message).to_contain_text("please ask again")
            expect(page.locator("#question textarea")).to_have_value(RENAL)  # back in its box, to ask again
            assert message.locator("a.cite-num").count() == 0
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / "startup-indexing-1366x768.png")

            request = urllib.request.Request(url + "api/ask", data=json.dumps({"question": RENAL}).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            try:
                urllib.request.urlopen(request, timeout=30)
                raise AssertionError("the API answered while the index was being built")
            except urllib.error.HTTPError as error:
                assert error.code == 503 and error.headers["Retry-After"]
                assert "still being indexed" in json.load(error)["error"]["message"]

            phone = open_page(browser, url, PHONE)
            expect(phone.locator("#startup")).to_contain_text("still being indexed", timeout=SHOWN_MS)
            phone.screenshot(path=ARTIFACTS / "startup-indexing-390x844.png")
            phone.context.close()

            expect(banner.locator("progress")).to_have_count(0, timeout=READY_TIMEOUT_MS)  # the library is ready
            assert status(url)["ready"] is True
            page.locator("#question textarea").press("Enter")  # the same question, asked again
            page.locator("#sources .sources-head", has_text="Sources of answer 2").wait_for()
            expect(page.locator('#chat [data-testid="bot"]').nth(1).locator("a.cite-num").first).to_be_visible()
            expect(page.locator("#filter-organ input")).to_be_visible()
            page.locator("#filter-organ input").click()  # the filters now offer the library's values
            expect(page.get_by_role("option", name="kidney", exact=True)).to_be_visible()
        finally:
            page.context.close()
