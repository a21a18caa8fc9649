"""One store for replicas (issue 20): with CASEBOT_DATABASE_URL, feedback and the audit log of every replica go to
one real PostgreSQL server (Debian's `postgresql`, started here on a loopback port, its data in a temporary
folder) and `casebot feedback export` reads them all; without it, SQLite beside the index as before."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from gradio_client import Client

from bot.feedback import FeedbackStore, feedback_path
from conftest import casebot_server, free_port, run_casebot
from test_openai_api import OFF_TOPIC, RENAL, RENAL_CASE, post_json


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own, trusting local connections; yields its URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL is missing: `make setup` installs Debian's postgresql (apt-get install -y postgresql)")
    pg_bin = found[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="casebot-pg-"))
    # initdb refuses to run as root: as root, the server runs as Debian's postgres user.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: object) -> None:
        done = subprocess.run([*as_owner, *map(str, command)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command[0]} failed: {done.stdout}{done.stderr}"

    run(pg_bin / "initdb", "-D", data, "-A", "trust", "-U", "casebot", "--no-sync")
    run(pg_bin / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql://casebot@127.0.0.1:{port}/postgres"
    finally:
        run(pg_bin / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_replicas_write_feedback_and_audit_rows_to_one_postgres_and_export_reads_them_all(
        postgres, knowledge_settings, knowledge_bot, tmp_path):
    shared = {"CASEBOT_DATABASE_URL": postgres, "CASEBOT_AUDIT": "ids"}
    for number, question in enumerate((RENAL, OFF_TOPIC)):
        with casebot_server(knowledge_settings.db, env=shared) as url:  # replica 1, then replica 2
            status, answer = post_json(f"{url}api/ask", {"question": question, "conversation": f"replica-{number}"})
            assert status == 200, answer
            if number == 1:  # the web app's own API endpoint is audited too
                Client(url, verbose=False).predict(RENAL, "web-1", api_name="/ask")
        rated = knowledge_bot.ask(question, f"pg-{number}")
        FeedbackStore(postgres).comment(f"answer-{number}", f"replica-{number}", rated,
                                        f"comment from replica {number}")

    audit = FeedbackStore(postgres).audit_rows()
    assert [(row["conversation"], row["question"], row["refused"]) for row in audit] == [
        ("api:replica-0", RENAL, False), ("api:replica-1", OFF_TOPIC, True), ("api:web-1", RENAL, False)]
    assert RENAL_CASE in json.loads(audit[0]["cited"]) and json.loads(audit[1]["cited"]) == []
    assert json.loads(audit[2]["cited"]) == json.loads(audit[0]["cited"])
    assert all(row["answer"] is None and row["backend"] == "extractive" for row in audit), "ids: no answer text"

    target = tmp_path / "feedback.csv"
    result = run_casebot("feedback", "export", str(target), "--db", str(tmp_path / "unused"),
                         env={"CASEBOT_DATABASE_URL": postgres})
    assert result.returncode == 0, result.stderr
    assert "wrote 2 feedback rows from postgresql+psycopg://casebot@127.0.0.1" in result.stdout
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [(r["conversation"], r["comment"]) for r in rows] == [
        ("replica-0", "comment from replica 0"), ("replica-1", "comment from replica 1")]
    assert not (tmp_path / "unused").exists(), "with a database URL nothing is written beside the index"


def test_the_sqlite_default_is_unchanged_and_audits_only_when_asked(knowledge_bot, tmp_path):
    settings = knowledge_bot.settings.model_copy(update={"db": tmp_path / "chroma"})
    path = feedback_path(settings)
    assert path == tmp_path / "chroma" / "feedback.sqlite3"
    answer = knowledge_bot.ask(RENAL, "sqlite-default")
    store = FeedbackStore(path)
    store.rate("a1", "c1", answer, "down")
    store.rate("a1", "c1", answer, "up")  # a change of mind updates the one row
    store.comment("a1", "c1", answer, "  useful  ")
    store.record("c1", answer)  # the audit is off by default: nothing is written
    assert [(r["answer_id"], r["rating"], r["comment"]) for r in store.rows()] == [("a1", "up", "useful")]
    assert store.audit_rows() == []

    full = FeedbackStore(path, audit="full")
    full.record("c1", answer)
    assert [row["answer"] for row in full.audit_rows()] == [answer.answer]

    target = tmp_path / "out.csv"
    result = run_casebot("feedback", "export", str(target), "--db", str(tmp_path / "chroma"))
    assert result.returncode == 0 and f"from {path}" in result.stdout, result.stderr


def test_a_database_url_that_cannot_be_used_is_named(tmp_path):
    result = run_casebot("feedback", "export", str(tmp_path / "x.csv"), env={"CASEBOT_DATABASE_URL": "postgresql:nope"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "CASEBOT_DATABASE_URL 'postgresql:nope' is not a database URL" in result.stderr


def test_serve_with_a_database_that_is_down_stops_at_once_naming_it(tmp_path):
    down = f"postgresql://casebot@127.0.0.1:{free_port()}/casebot"
    result = run_casebot("serve", "--port", str(free_port()), "--db", str(tmp_path / "chroma"),
                         env={"CASEBOT_DATABASE_URL": down})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "127.0.0.1" in result.stderr and "refused" in result.stderr.lower(), result.stderr
