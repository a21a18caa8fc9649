"""Server mode: a real `chroma run` server on loopback, shared by several clients (replicas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bot.conversation import CaseBot
from bot.settings import load_settings
from conftest import free_port, run_casebot, write_case


CASES = {
    "renal-plex": dict(title="Renal crisis treated with plasma exchange", organs="kidney", failed="ACE inhibitors",
                       next="plasma exchange", resistance="Creatinine kept rising on captopril.",
                       next_text="Plasma exchange was started for the renal crisis."),
    "gut-octreotide": dict(title="Pseudo-obstruction treated with octreotide", organs="gastrointestinal",
                           failed="prokinetics", next="octreotide",
                           next_text="Octreotide at night eased the bloating of intestinal pseudo-obstruction."),
}


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    chroma = Path(sys.executable).parent / "chroma"  # installed with chromadb into the same environment
    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    log = open(folder / "server.log", "w")  # a file, not a pipe: a full pipe would stall the server
    process = subprocess.Popen([str(chroma), "run", "--path", str(folder / "data"), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"chroma run exited: {(folder / 'server.log').read_text()}")
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("chroma run did not start within 60 s")
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


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
