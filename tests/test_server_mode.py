"""Server mode: a real `chroma run` server on loopback, shared by several clients (replicas), and killed and
started again under a running app (issue 21)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from openai import OpenAI
from playwright.sync_api import expect

from bot.conversation import CaseBot
from bot.settings import load_settings
from conftest import CASEBOT, PROJECT_ROOT, casebot_server, free_port, run_casebot, write_case


CASES = {
    "renal-plex": dict(title="Renal crisis treated with plasma exchange", organs="kidney", failed="ACE inhibitors",
                       next="plasma exchange", resistance="Creatinine kept rising on captopril.",
                       next_text="Plasma exchange was started for the renal crisis."),
    "gut-octreotide": dict(title="Pseudo-obstruction treated with octreotide", organs="gastrointestinal",
                           failed="prokinetics", next="octreotide",
                           next_text="Octreotide at night eased the bloating of intestinal pseudo-obstruction."),
}


class ChromaServer:
    """A real `chroma run` on loopback over one data folder, which a test can kill and start again on the same
    port and folder (a server restarted, as an operator would)."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        chroma = Path(sys.executable).parent / "chroma"  # installed with chromadb into the same environment
        log = open(self.folder / "server.log", "a")  # a file, not a pipe: a full pipe would stall the server
        self.process = subprocess.Popen([str(chroma), "run", "--path", str(self.folder / "data"), "--host",
                                         "127.0.0.1", "--port", str(self.port)], stdout=log,
                                        stderr=subprocess.STDOUT, env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2)
                return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"chroma run exited: {(self.folder / 'server.log').read_text()}")
                time.sleep(0.3)
        self.process.kill()
        pytest.fail("chroma run did not start within 60 s")

    def kill(self) -> None:
        """Killed outright (SIGKILL): no goodbye to its clients."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def chroma(tmp_path_factory) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chroma_server(chroma) -> str:
    return chroma.url


def test_replicas_share_one_chroma_server_and_see_each_others_ingests(chroma_server, tmp_path: Path):
    library = tmp_path / "library"
    write_case(library, id="renal-plex", **CASES["renal-plex"])
    server_env = {"CASEBOT_CHROMA_URL": chroma_server, "CASEBOT_KNOWLEDGE": str(library)}

    first = run_casebot("ingest", env={**server_env, "CASEBOT_DB": str(tmp_path / "client-1" / "chroma")})
    assert first.returncode == 0, first.stderr
    assert "1 added" in first.stdout
    assert not (tmp_path / "client-1" / "chroma").exists(), "server mode must not create a local Chroma database"

    replica = CaseBot(load_settings(chroma_url=chroma_server, knowledge=library, db=tmp_path / "replica" / "chroma"),
                      log=lambda m: None)
    assert [c.case_id for c in replica.ask("Renal crisis on captopril: what next?", "r1").citations] == ["renal-plex"]
    before = replica.ask("Intestinal pseudo-obstruction: was octreotide tried?", "r2")
    assert before.refused

    write_case(library, id="gut-octreotide", **CASES["gut-octreotide"])
    second = run_casebot("ingest", env={**server_env, "CASEBOT_DB": str(tmp_path / "client-2" / "chroma")})
    assert "1 added, 0 updated, 1 unchanged" in second.stdout, second.stdout + second.stderr

    after = replica.ask("Intestinal pseudo-obstruction: was octreotide tried?", "r3")
    assert [c.case_id for c in after.citations] == ["gut-octreotide"]

    asked = run_casebot("ask", "pseudo-obstruction and octreotide", "--json",
                        env={**server_env, "CASEBOT_DB": str(tmp_path / "client-3" / "chroma")})
    assert json.loads(asked.stdout)["citations"][0]["case_id"] == "gut-octreotide"


LINKED = dict(title="Digital ulcers treated with iloprost", organs="skin", failed="nifedipine", next="iloprost",
              resistance="Digital ulcers kept recurring on nifedipine.",
              next_text="Iloprost infusions healed the digital ulcers, as in [the unit's protocol]"
                        "(http://example.org/protocol) and https://example.org/ulcers describe.")
RENAL = "Renal crisis on captopril: what next?"
ULCERS = "Digital ulcers despite nifedipine: was iloprost tried?"


@pytest.fixture(scope="module")
def fault_library(chroma, tmp_path_factory) -> dict[str, str]:
    """A small library in its own collection on the module's Chroma server; the environment that points at it."""
    folder = tmp_path_factory.mktemp("fault")
    library = folder / "library"
    for case_id, fields in (*CASES.items(), ("skin-iloprost-link", LINKED)):
        write_case(library, id=case_id, **fields)
    env = {"CASEBOT_CHROMA_URL": chroma.url, "CASEBOT_COLLECTION": "fault-cases", "CASEBOT_KNOWLEDGE": str(library),
           "CASEBOT_DB": str(folder / "client" / "chroma")}
    ingested = run_casebot("ingest", env=env)
    assert ingested.returncode == 0 and "3 added" in ingested.stdout, ingested.stdout + ingested.stderr
    return env


def unreachable(chroma: ChromaServer) -> str:
    return f"the case index at {chroma.url} is not reachable; try again shortly"


def jsonl_ask(chat: subprocess.Popen, question: str, conversation: str) -> dict:
    """One line to a running `casebot chat --jsonl` and its one line back."""
    chat.stdin.write(json.dumps({"question": question, "conversation": conversation}) + "\n")
    chat.stdin.flush()
    line = chat.stdout.readline()
    assert line, f"casebot chat ended: {chat.stderr.read()}"
    return json.loads(line)


def test_chat_jsonl_says_the_index_is_unreachable_while_the_chroma_server_is_down_and_answers_once_it_is_back(
        chroma, fault_library):
    """Issue 21: the Chroma server killed mid-conversation and restarted on the same port and data: the line asked
    meanwhile is answered with the reason, and the next one is answered by the same process."""
    chat = subprocess.Popen([*CASEBOT, "chat", "--jsonl"], cwd=PROJECT_ROOT, env={**os.environ, **fault_library},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ask(question: str) -> dict:
        return jsonl_ask(chat, question, "ward")

    try:
        assert [c["case_id"] for c in ask(RENAL)["citations"]] == ["renal-plex"]
        chroma.kill()
        try:
            assert ask("And the outcome?") == {"error": f"line 2: {unreachable(chroma)}", "line": 2}
        finally:
            chroma.start()
        after = ask(ULCERS)
        assert [c["case_id"] for c in after["citations"]] == ["skin-iloprost-link"]
        chat.stdin.close()
        assert chat.wait(timeout=120) == 2  # a line was not answered
        assert "Traceback" not in chat.stderr.read()
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()


def test_a_command_started_with_the_server_down_names_the_address_it_tried(fault_library):
    """Before: "Could not connect to a Chroma server. Are you sure it is running?", naming no address."""
    address = f"http://127.0.0.1:{free_port()}"
    done = run_casebot("ask", RENAL, env={**fault_library, "CASEBOT_CHROMA_URL": address})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the Chroma server at {address} (CASEBOT_CHROMA_URL) could not be reached" in done.stderr


def test_a_hung_chroma_server_costs_a_question_its_timeout_not_the_process(chroma, fault_library):
    """Before: chromadb's HTTP session had no timeout, so a server that stopped answering (here: SIGSTOP, as a
    frozen host would) held the question, and every later one, for ever. Now the question is answered with the
    reason after CASEBOT_CHROMA_TIMEOUT, and once the server moves again the same process answers."""
    chat = subprocess.Popen([*CASEBOT, "chat", "--jsonl"], cwd=PROJECT_ROOT,
                            env={**os.environ, **fault_library, "CASEBOT_CHROMA_TIMEOUT": "5"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ask(question: str) -> dict:
        return jsonl_ask(chat, question, "hung")

    try:
        assert [c["case_id"] for c in ask(RENAL)["citations"]] == ["renal-plex"]
        os.kill(chroma.process.pid, signal.SIGSTOP)
        try:
            assert ask(ULCERS) == {"error": f"line 2: {unreachable(chroma)}", "line": 2}
        finally:
            os.kill(chroma.process.pid, signal.SIGCONT)
        assert [c["case_id"] for c in ask(ULCERS)["citations"]] == ["skin-iloprost-link"]
        chat.stdin.close()
        assert chat.wait(timeout=120) == 2 and "Traceback" not in chat.stderr.read()
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()


@pytest.fixture(scope="module")
def fault_app(fault_library) -> Iterator[str]:
    """A real `casebot serve` over the fault library, through the module's Chroma server."""
    with casebot_server(Path(fault_library["CASEBOT_DB"]), env=fault_library) as url:
        yield url


def post_ask(url: str, question: str, conversation: str) -> tuple[int, Message, dict]:
    """POST /api/ask: the status, the headers and the JSON body, error or not."""
    request = urllib.request.Request(f"{url}api/ask", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"question": question, "conversation": conversation}).encode())
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


def open_chat(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.locator("#question textarea").wait_for()
    return page


def wait_sources(page, number: int) -> None:
    """Until the sources panel heads answer `number`: its last piece is in (answered or not)."""
    page.locator("#sources .sources-head", has_text=re.compile(rf"Sources of answer {number}\b")).wait_for()


def outside_links(page, where: str) -> list[str]:
    """The links under `where` that lead off the page (a citation number leads to #its-source)."""
    return page.evaluate(f"[...document.querySelectorAll('{where} a[href]')].map(a => a.getAttribute('href'))"
                         ".filter(href => !href.startsWith('#'))")


def test_links_in_case_text_show_as_text_in_the_chat_and_the_whole_case(browser, fault_app):
    """Issue 21, item 15: a case's Markdown link and bare address rendered as live links in chat answers."""
    page = open_chat(browser, fault_app)
    try:
        page.locator("#question textarea").fill(ULCERS)
        page.locator("#question textarea").press("Enter")
        wait_sources(page, 1)
        message = page.locator('#chat [data-testid="bot"]').last
        shown = " ".join(message.inner_text().split())
        assert "http://example.org/protocol" in shown and "https://example.org/ulcers" in shown
        assert outside_links(page, "#chat") == []
        page.locator("#sources summary", has_text="Open the whole case").first.click()
        assert "http://example.org/protocol" in page.locator("#sources .whole-case").first.inner_text()
        assert outside_links(page, "#sources") == []
    finally:
        page.context.close()


def test_the_web_app_says_the_index_is_unreachable_while_the_chroma_server_is_down_and_recovers_by_itself(
        browser, chroma, fault_app):
    """Issue 21: with the Chroma server killed, the HTTP API answers a typed 503, the named `ask` endpoint and the
    chat say why in words (not "Error"), and the question stays in its box; restarted, the same app answers."""
    status, _, body = post_ask(fault_app, RENAL, "api-fault")
    assert status == 200 and [c["case_id"] for c in body["citations"]] == ["renal-plex"]
    client = Client(fault_app, verbose=False)
    page = open_chat(browser, fault_app)
    chroma.kill()
    try:
        status, headers, body = post_ask(fault_app, "And the outcome?", "api-fault")
        assert status == 503 and headers["Retry-After"]
        assert body["error"] == {"message": unreachable(chroma), "type": "server_error", "param": None,
                                 "code": "index_unavailable"}
        with pytest.raises(AppError, match=re.escape(unreachable(chroma))):
            client.predict(RENAL, "web-fault", api_name="/ask")
        chat = OpenAI(base_url=f"{fault_app}v1", api_key="unused", max_retries=0)
        asked = {"model": "casebot", "messages": [{"role": "user", "content": RENAL}]}
        with pytest.raises(openai.InternalServerError, match=re.escape(unreachable(chroma))):
            chat.chat.completions.create(**asked)
        with pytest.raises(openai.APIError, match=re.escape(unreachable(chroma))):
            list(chat.chat.completions.create(**asked, stream=True))
        page.locator("#question textarea").fill(ULCERS)
        page.locator("#question textarea").press("Enter")
        wait_sources(page, 1)
        warning = page.locator('#chat [data-testid="bot"]').last.locator(".answer-warning")
        assert " ".join(warning.inner_text().split()) == unreachable(chroma)
        expect(page.locator("#question textarea")).to_have_value(ULCERS)
    finally:
        chroma.start()
    try:
        page.locator("#question textarea").press("Enter")  # the same question, asked again
        wait_sources(page, 2)
        assert page.locator('#chat [data-testid="bot"]').last.locator("a.cite-num").count() >= 1
        assert "Iloprost" in page.locator("#sources").inner_text()
    finally:
        page.context.close()
    status, _, body = post_ask(fault_app, "And the outcome?", "api-fault")
    assert status == 200 and [c["case_id"] for c in body["citations"]] == ["renal-plex"]
    assert client.predict(RENAL, "web-fault", api_name="/ask")["citations"][0]["case_id"] == "renal-plex"
