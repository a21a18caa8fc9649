"""Exposure and offline operation: the web app listens on loopback only, and nothing casebot runs (ingest,
ask, the web app and its API) tries to reach the network: no model hub, no telemetry, no share link.

The casebot processes here run with tests/offline_guard on PYTHONPATH, whose sitecustomize refuses and logs
every connection to a non-loopback address and every host-name lookup other than localhost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from gradio_client import Client

from conftest import PROJECT_ROOT, casebot_server, run_casebot

GUARD = PROJECT_ROOT / "tests" / "offline_guard"


def guarded(log: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(GUARD), os.environ.get("PYTHONPATH")])),
            "CASEBOT_NETWORK_LOG": str(log)}


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on for `port`, read from the kernel's table."""
    found = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # kernel order per 32-bit word
                found.add(socket.inet_ntop(socket.AF_INET if size == 8 else socket.AF_INET6, words))
    return found


def test_the_guard_catches_an_attempt_to_reach_the_network(tmp_path):
    """The check below can fail: a process that tries to go out is caught and logged (and kept in)."""
    log = tmp_path / "network.log"
    code = "import urllib.request; urllib.request.urlopen('https://huggingface.co/api/models', timeout=5)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **guarded(log)}, timeout=60)
    assert result.returncode != 0
    assert "look up huggingface.co" in log.read_text()


def test_ingest_ask_and_the_web_app_reach_no_network(tmp_path):
    log = tmp_path / "network.log"
    db = tmp_path / "db"
    ingested = run_casebot("ingest", "--db", str(db), env=guarded(log))
    assert ingested.returncode == 0, ingested.stderr
    asked = run_casebot("ask", "Renal crisis not responding to ACE inhibitors: options?", "--json", "--db", str(db),
                        env=guarded(log))
    assert asked.returncode == 0 and '"refused": false' in asked.stdout, asked.stderr
    with casebot_server(db, env=guarded(log)) as url:
        with urllib.request.urlopen(url, timeout=30) as page:
            assert "casebot" in page.read().decode()
        client = Client(url, verbose=False)
        answer = client.predict("Digital ulcers despite bosentan: what was tried?", "offline", api_name="/ask")
        assert answer["citations"]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        assert listening_addresses(port) == {"127.0.0.1"}, "the app must listen on loopback only by default"
    assert not log.exists(), f"casebot tried to reach the network:\n{log.read_text()}"
