"""Clinicians' ratings and comments on answers, kept in SQLite next to the index so that the answers
they judged (with the citations those answers carried) can be reviewed later or exported as CSV."""

from __future__ import annotations

import csv
import json
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bot.settings import Settings

if TYPE_CHECKING:  # only the type: `casebot feedback export` need not load the retrieval stack
    from bot.answer import Answer

Rating = Literal["up", "down"]
COLUMNS = ("answer_id", "time", "conversation", "question", "answer", "citations", "backend", "rating", "comment")
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    answer_id    TEXT PRIMARY KEY,  -- one row per answer: a later rating or comment updates it
    time         TEXT NOT NULL,     -- UTC, ISO 8601, of the latest change
    conversation TEXT NOT NULL,
    question     TEXT NOT NULL,
    answer       TEXT NOT NULL,
    citations    TEXT NOT NULL,     -- JSON: the answer's own citations, with their passages
    backend      TEXT NOT NULL,
    rating       TEXT CHECK (rating IN ('up', 'down')),
    comment      TEXT
)"""


def feedback_path(settings: Settings) -> Path:
    """Beside the index: inside the embedded Chroma folder, or next to the local cache in server mode."""
    folder = settings.db.parent if settings.chroma_url else settings.db
    return folder / "feedback.sqlite3"


class FeedbackStore:
    """One row per rated or commented answer. Each call opens its own connection: Gradio calls from threads."""

    def __init__(self, path: Path):
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30)
        connection.execute(SCHEMA)
        return connection

    def rate(self, answer_id: str, conversation: str, answer: Answer, rating: Rating | None) -> None:
        """Thumbs up or down; None withdraws the rating (the comment, if any, stays)."""
        self._save(answer_id, conversation, answer, "rating", rating)

    def comment(self, answer_id: str, conversation: str, answer: Answer, comment: str) -> None:
        self._save(answer_id, conversation, answer, "comment", comment.strip() or None)

    def _save(self, answer_id: str, conversation: str, answer: Answer, field: str, value: str | None) -> None:
        row = {"answer_id": answer_id, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "conversation": conversation, "question": answer.question, "answer": answer.answer,
               "citations": json.dumps([c.model_dump() for c in answer.citations], ensure_ascii=False),
               "backend": answer.backend, "rating": None, "comment": None, field: value}
        with closing(self._connect()) as connection, connection:
            connection.execute(
                f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                f"ON CONFLICT(answer_id) DO UPDATE SET {field} = excluded.{field}, time = excluded.time",
                [row[column] for column in COLUMNS])

    def rows(self) -> list[dict]:
        """Every stored row, oldest change first; none when nothing was ever stored."""
        if not self.path.exists():
            return []
        with closing(self._connect()) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute("SELECT * FROM feedback ORDER BY time, rowid")]

    def export_csv(self, target: Path) -> int:
        """Writes every row to `target` as CSV (citations as JSON); returns the number of rows."""
        rows = self.rows()
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)
