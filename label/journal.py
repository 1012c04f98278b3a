"""The label journal: every oracle call, and every label, in local SQLite.

A label is committed here before it is appended to labelled.jsonl, so a run
killed at any moment loses nothing it paid for: on rerun, a key with a label
in the journal is written from the journal without calling the oracle. Calls
are keyed by a hash of the filter prompt, the article text sent, the model and
the generation config, so changing any of those means a new call, and nothing
else does. The API key is never passed in here.

The schema evolves by small named forward-only migrations, each applied in
one transaction; the names applied are kept in `_migrations`, so an older
journal is upgraded in place. A journal is only ever created where no file
exists: one that exists but cannot be read (empty, damaged, not a journal)
stops the run, because starting afresh would pay again for what it held.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from distill.errors import JournalError
from distill.label.oracle.base import GenerationConfig, OracleReply


def call_key(prompt_sha256: str, article_text: str, config: GenerationConfig) -> str:
    payload = json.dumps(
        {"prompt_sha256": prompt_sha256, "article": article_text, "generation": config.to_json()},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _m001_calls_and_labels(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            article_id TEXT,
            attempt INTEGER NOT NULL,
            status TEXT NOT NULL,          -- pending, ok, or a failure kind
            started_at TEXT NOT NULL,
            latency_s REAL,
            input_tokens INTEGER DEFAULT 0,
            output_tokens INTEGER DEFAULT 0,
            cost_usd REAL DEFAULT 0,
            message TEXT
        )
        """
    )
    db.execute("CREATE INDEX calls_key ON calls(key)")
    db.execute(
        """
        CREATE TABLE labels (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            prompt_sha256 TEXT NOT NULL,
            scores TEXT NOT NULL,
            reasoning TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL,
            labelled_at TEXT NOT NULL
        )
        """
    )


def _m002_run_and_mode(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE calls ADD COLUMN run_id TEXT")
    db.execute("ALTER TABLE calls ADD COLUMN mode TEXT DEFAULT 'sync'")


def _m003_batch_jobs(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE batch_jobs (
            name TEXT PRIMARY KEY,
            run_id TEXT,
            submitted_at TEXT NOT NULL,
            state TEXT NOT NULL,
            keys TEXT NOT NULL             -- JSON list of call keys in the job
        )
        """
    )
    db.execute("ALTER TABLE calls ADD COLUMN batch_job TEXT")


# Each step runs plain `execute` calls only: `executescript` commits before it
# starts and runs each statement on its own, so a failing step would be left
# half applied. `migrate` wraps each step and its record in one transaction.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_calls_and_labels", _m001_calls_and_labels),
    ("002_run_and_mode", _m002_run_and_mode),
    ("003_batch_jobs", _m003_batch_jobs),
]

# The columns the code reads and writes, after every migration.
SCHEMA = {
    "calls": {"id", "key", "article_id", "attempt", "status", "started_at", "latency_s", "input_tokens",
              "output_tokens", "cost_usd", "message", "run_id", "mode", "batch_job"},
    "labels": {"key", "model", "prompt_sha256", "scores", "reasoning", "input_tokens", "output_tokens",
               "cost_usd", "labelled_at"},
    "batch_jobs": {"name", "run_id", "submitted_at", "state", "keys"},
}


def migrate(db: sqlite3.Connection, migrations=MIGRATIONS) -> list[str]:
    """Apply the migrations not yet applied, in order, each all or nothing; returns
    their names. `db` must be in autocommit mode (isolation_level=None)."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for name, step in migrations:
        if name not in done and _apply(db, name, step):
            applied.append(name)
    return applied


def _apply(db: sqlite3.Connection, name: str, step: Callable[[sqlite3.Connection], None]) -> bool:
    """One migration and its record in one transaction; False if another process beat us to it."""
    db.execute("BEGIN IMMEDIATE")  # IMMEDIATE: a second process waits here instead of migrating too
    try:
        if db.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone() is not None:
            db.execute("COMMIT")
            return False
        step(db)
        db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, utc_now()))
        db.execute("COMMIT")
        return True
    except BaseException:
        if db.in_transaction:  # some errors (a full disk) have rolled back already
            db.execute("ROLLBACK")
        raise


@dataclass(frozen=True)
class Label:
    key: str
    model: str
    prompt_sha256: str
    scores: dict[str, int]
    reasoning: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    labelled_at: str


def _create(path: Path) -> None:
    """A new journal, built beside its final name and moved into place complete,
    so a journal.sqlite that exists always held a journal (a kill mid-creation
    leaves only the .new file, which is never read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(path.name + ".new")
    for leftover in (building, Path(f"{building}-wal"), Path(f"{building}-shm")):
        leftover.unlink(missing_ok=True)
    db = sqlite3.connect(building, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        migrate(db)
    finally:
        db.close()  # checkpoints the WAL into the file before it is moved
    os.replace(building, path)


def _open_existing(path: Path) -> sqlite3.Connection:
    if path.is_file() and path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty (0 bytes)")
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise _unreadable(path, str(exc)) from exc
    try:
        _check_readable(db, path)
        migrate(db)
        _check_schema(db, path)
        # WAL + NORMAL: a commit survives SIGKILL of this process (not power loss).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        db.close()
        raise _unreadable(path, str(exc)) from exc
    except JournalError:
        db.close()
        raise
    return db


def _check_readable(db: sqlite3.Connection, path: Path) -> None:
    """Every page readable, and a journal's own bookkeeping table present, with
    no migration this code does not know (a newer distill wrote it)."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise _unreadable(path, f"the database is damaged ({problems[0]})")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "_migrations" not in tables:
        found = ", ".join(sorted(tables)) or "none"
        raise _unreadable(path, f"it is not a distill label journal (no _migrations table; tables: {found})")
    known = {name for name, _ in MIGRATIONS}
    unknown = sorted({row[0] for row in db.execute("SELECT name FROM _migrations")} - known)
    if unknown:
        raise JournalError(f"{path}: written by a newer distill (migration {unknown[0]} is unknown here); "
                           "upgrade distill to go on with this journal")


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    for table, columns in SCHEMA.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        missing = sorted(columns - present)
        if missing:
            raise _unreadable(path, f"table {table} lacks column(s) {', '.join(missing)}")


def _unreadable(path: Path, reason: str) -> JournalError:
    return JournalError(
        f"{path}: the label journal cannot be read: {reason}. It records what was already paid "
        "for, so nothing was sent and no new journal was started; restore the file from a "
        "backup, or move it away to start a new journal (articles already in labelled.jsonl "
        "stay skipped)"
    )


class Journal:
    """Opens the journal at `path`, creating it only where no file exists: an
    existing file that cannot be read as a journal raises JournalError, since a
    fresh journal in its place would pay again for every label it held."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            _create(self.path)
        self.db = _open_existing(self.path)

    def close(self) -> None:
        self.db.close()

    def mark_interrupted(self) -> int:
        """Sync calls left pending by a killed run: their outcome is unknown, so they
        count as failed. Pending batch calls stay: their job still runs server-side."""
        with self.db:
            return self.db.execute(
                "UPDATE calls SET status='interrupted' WHERE status='pending' AND batch_job IS NULL"
            ).rowcount

    def label(self, key: str) -> Label | None:
        row = self.db.execute("SELECT * FROM labels WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return Label(row[0], row[1], row[2], json.loads(row[3]), row[4] or "", row[5], row[6], row[7], row[8])

    def attempts(self, key: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM calls WHERE key=?", (key,)).fetchone()[0]

    def start_call(self, key: str, article_id: str, attempt: int, run_id: str) -> int:
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO calls (key, article_id, attempt, status, started_at, run_id, mode) "
                "VALUES (?, ?, ?, 'pending', ?, ?, 'sync')",
                (key, article_id, attempt, utc_now(), run_id),
            )
        return cursor.lastrowid

    def finish_call(
        self, call_id: int, status: str, latency_s: float, input_tokens: int, output_tokens: int,
        cost_usd: float, message: str = "",
    ) -> None:
        with self.db:
            self._finish(call_id, status, latency_s, input_tokens, output_tokens, cost_usd, message)

    def record_label(
        self, call_id: int, key: str, model: str, prompt_sha256: str, reply: OracleReply,
        cost_usd: float, latency_s: float,
    ) -> Label:
        """The call's outcome and its label in one transaction."""
        label = Label(key, model, prompt_sha256, reply.scores, reply.reasoning, reply.input_tokens,
                      reply.output_tokens, cost_usd, utc_now())
        with self.db:
            self._finish(call_id, "ok", latency_s, reply.input_tokens, reply.output_tokens, cost_usd, "")
            self.db.execute(
                "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, prompt_sha256, json.dumps(reply.scores), reply.reasoning,
                 reply.input_tokens, reply.output_tokens, cost_usd, label.labelled_at),
            )
        return self.label(key) or label

    def _finish(self, call_id, status, latency_s, input_tokens, output_tokens, cost_usd, message) -> None:
        self.db.execute(
            "UPDATE calls SET status=?, latency_s=?, input_tokens=?, output_tokens=?, cost_usd=?, "
            "message=? WHERE id=?",
            (status, latency_s, input_tokens, output_tokens, cost_usd, message[:500], call_id),
        )

    def mean_output_tokens(self) -> float | None:
        value = self.db.execute("SELECT AVG(output_tokens) FROM labels").fetchone()[0]
        return float(value) if value is not None else None

    # -- batch jobs -----------------------------------------------------------
    def add_batch(self, name: str, run_id: str, keys: dict[str, tuple[str, int]]) -> None:
        """A submitted job and one pending call per key (key -> (article id, attempt))."""
        now = utc_now()
        with self.db:
            self.db.execute("INSERT INTO batch_jobs VALUES (?, ?, ?, 'SUBMITTED', ?)",
                            (name, run_id, now, json.dumps(list(keys))))
            self.db.executemany(
                "INSERT INTO calls (key, article_id, attempt, status, started_at, run_id, mode, batch_job) "
                "VALUES (?, ?, ?, 'pending', ?, ?, 'batch', ?)",
                [(key, article_id, attempt, now, run_id, name) for key, (article_id, attempt) in keys.items()],
            )

    def open_batches(self) -> list[tuple[str, list[str]]]:
        rows = self.db.execute(
            "SELECT name, keys FROM batch_jobs WHERE state != 'COLLECTED' ORDER BY submitted_at"
        ).fetchall()
        return [(name, json.loads(keys)) for name, keys in rows]

    def batch_call_id(self, name: str, key: str) -> int | None:
        row = self.db.execute("SELECT id FROM calls WHERE batch_job=? AND key=? AND status='pending'",
                              (name, key)).fetchone()
        return row[0] if row else None

    def set_batch_state(self, name: str, state: str) -> None:
        with self.db:
            self.db.execute("UPDATE batch_jobs SET state=? WHERE name=?", (state, name))
