"""The web chat, served for real by `casebot serve`, answering through its named `ask` API endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request

import pytest
from gradio_client import Client

from conftest import CASEBOT, PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(knowledge_settings, knowledge_bot):
    port = free_port()
    process = subprocess.Popen([*CASEBOT, "serve", "--port", str(port), "--db", str(knowledge_settings.db)],
                               cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"casebot serve exited: {process.stdout.read()}")
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("casebot serve did not answer within 120 s")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_page_is_served_on_loopback(server):
    with urllib.request.urlopen(server, timeout=10) as response:
        assert "casebot" in response.read().decode()


def test_ask_endpoint_returns_the_answer_object_and_keeps_conversations(server):
    client = Client(server, verbose=False)
    first = client.predict("Renal crisis not responding to ACE inhibitors: what was tried?", "web-1", api_name="/ask")
    assert first["refused"] is False
    assert "seed-src-ace-plasma-exchange" in [c["case_id"] for c in first["citations"]]
    follow = client.predict("What came after that?", "web-1", api_name="/ask")
    assert follow["standalone_question"] != follow["question"]
    assert {c["case_id"] for c in follow["citations"]} <= {c["case_id"] for c in first["citations"]}
    fresh = client.predict("What came after that?", "web-2", api_name="/ask")
    assert fresh["standalone_question"] == fresh["question"]
