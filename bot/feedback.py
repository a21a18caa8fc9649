"""Clinicians' ratings and comments on answers, and (when asked for) an audit log of the questions answered, so
that the answers they judged (with the citations those answers carried) can be reviewed later or exported as
CSV. Kept in SQLite next to the index by default; with settings.database_url (PostgreSQL) every replica writes
to one shared database. Both go through SQLAlchemy, so the two behave alike."""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import (Boolean, CheckConstraint, Column, Integer, MetaData, String, Table, Text, create_engine,
                        select)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from bot.settings import Settings

if TYPE_CHECKING:  # only the type: `casebot feedback export` need not load the retrieval stack
    from bot.answer import Answer

Rating = Literal["up", "down"]
COLUMNS = ("answer_id", "time", "conversation", "question", "answer", "citations", "backend", "rating", "comment")
POSTGRES_EXTRA = "pip install -e '.[postgres]'"

tables = MetaData()
FEEDBACK = Table(
    "feedback", tables,
    Column("answer_id", Text, primary_key=True),  # one row per answer: a later rating or comment updates it
    Column("time", Text, nullable=False),  # UTC, ISO 8601, of the latest change
    Column("conversation", Text, nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("citations", Text, nullable=False),  # JSON: the answer's own citations, with their passages
    Column("backend", Text, nullable=False),
    Column("rating", String(4), CheckConstraint("rating IN ('up', 'down')")),
    Column("comment", Text),
)
AUDIT = Table(
    "audit", tables,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Text, nullable=False),  # UTC, ISO 8601, when the answer was given
    Column("conversation", Text, nullable=False),
    Column("question", Text, nullable=False),
    Column("cited", Text, nullable=False),  # JSON list of the cited case ids
    Column("backend", Text, nullable=False),
    Column("refused", Boolean, nullable=False),
    Column("answer", Text),  # the answer's text; none with settings.audit == "ids"
)


def feedback_path(settings: Settings) -> Path:
    """Beside the index: inside the embedded Chroma folder, or next to the local cache in server mode."""
    folder = settings.db.parent if settings.chroma_url else settings.db
    return folder / "feedback.sqlite3"


def feedback_store(settings: Settings) -> FeedbackStore:
    """The configured store: settings.database_url, else the SQLite file beside the index."""
    return FeedbackStore(settings.database_url or feedback_path(settings), settings.audit)


class FeedbackStore:
    """One row per rated or commented answer, and one audit row per answer given when `audit` is on. Safe to
    share between threads (Gradio calls from several): each call takes its own pooled connection."""

    def __init__(self, target: Path | str, audit: Literal["off", "ids", "full"] = "off"):
        self.audit_mode = audit
        if isinstance(target, Path):
            self.where, self.path = str(target), target
            self.url = f"sqlite:///{target}"
        else:
            self.path = None
            self.url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", target)
            try:
                self.where = make_url(self.url).render_as_string(hide_password=True)
            except ArgumentError:
                raise ValueError(f"CASEBOT_DATABASE_URL {target!r} is not a database URL "
                                 "(postgresql://user:password@host:port/database)") from None
        self._engine: Engine | None = None

    def _connect(self):
        if self._engine is None:
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._engine = create_engine(self.url, connect_args={"timeout": 30} if self.path else {},
                                             pool_pre_ping=True)
            except (ModuleNotFoundError, NoSuchModuleError) as error:
                raise ValueError(f"{self.where} needs the PostgreSQL driver: install the postgres extra with "
                                 f"`{POSTGRES_EXTRA}`") from error
            tables.create_all(self._engine)
        return self._engine.begin()

    def check(self) -> None:
        """Connects once (creating the tables if need be): a database that is down or a missing driver is
        reported at start-up, not at a clinician's first rating."""
        try:
            with self._connect():
                pass
        except SQLAlchemyError as error:
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            raise ValueError(f"cannot use the database {self.where} (CASEBOT_DATABASE_URL): {reason}") from None

    def rate(self, answer_id: str, conversation: str, answer: Answer, rating: Rating | None) -> None:
        """Thumbs up or down; None withdraws the rating (the comment, if any, stays)."""
        self._save(answer_id, conversation, answer, "rating", rating)

    def comment(self, answer_id: str, conversation: str, answer: Answer, comment: str) -> None:
        self._save(answer_id, conversation, answer, "comment", comment.strip() or None)

    def _save(self, answer_id: str, conversation: str, answer: Answer, field: str, value: str | None) -> None:
        row = {"answer_id": answer_id, "time": _now(), "conversation": conversation, "question": answer.question,
               "answer": answer.answer,
               "citations": json.dumps([c.model_dump() for c in answer.citations], ensure_ascii=False),
               "backend": answer.backend, "rating": None, "comment": None, field: value}
        with self._connect() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(FEEDBACK).values(row)
            connection.execute(insert.on_conflict_do_update(
                index_elements=["answer_id"], set_={field: insert.excluded[field], "time": insert.excluded.time}))

    def record(self, conversation: str, answer: Answer) -> None:
        """The audit row of an answer given (nothing when the audit is off); with audit "ids", no answer text."""
        if self.audit_mode == "off":
            return
        row = {"time": _now(), "conversation": conversation, "question": answer.question,
               "cited": json.dumps([c.case_id for c in answer.citations]), "backend": answer.backend,
               "refused": answer.refused, "answer": answer.answer if self.audit_mode == "full" else None}
        with self._connect() as connection:
            connection.execute(AUDIT.insert().values(row))

    def rows(self) -> list[dict]:
        """Every stored feedback row, oldest change first; none when nothing was ever stored."""
        return self._rows(FEEDBACK, FEEDBACK.c.time, FEEDBACK.c.answer_id)

    def audit_rows(self) -> list[dict]:
        """Every audit row, oldest first."""
        return self._rows(AUDIT, AUDIT.c.id)

    def _rows(self, table: Table, *order) -> list[dict]:
        if self.path and not self.path.exists():
            return []
        with self._connect() as connection:
            return [dict(row._mapping) for row in connection.execute(select(table).order_by(*order))]

    def export_csv(self, target: Path) -> int:
        """Writes every feedback row to `target` as CSV (citations as JSON); returns the number of rows."""
        rows = self.rows()
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
