"""The label journal on disk: created only where no file is, never replaced
when it cannot be read, and migrated all or nothing."""

from __future__ import annotations

import re
import sqlite3

import pytest
from fake_gemini import FakeGemini
from label_helpers import SECRET, label_args, read_output, run_cli, write_articles

from distill.errors import JournalError
from distill.label.journal import MIGRATIONS, Journal, migrate
from distill.label.oracle.base import OracleReply


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def applied(db: sqlite3.Connection) -> list[str]:
    return [name for (name,) in db.execute("SELECT name FROM _migrations ORDER BY name")]


def test_a_failing_migration_leaves_schema_and_version_as_they_were(tmp_path):
    db = sqlite3.connect(tmp_path / "j.sqlite", isolation_level=None)
    migrate(db, MIGRATIONS[:1])
    before_calls, before_tables = columns(db, "calls"), tables(db)

    def half_good(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE calls ADD COLUMN run_id TEXT")
        db.execute("CREATE TABLE extra (x INTEGER)")
        db.execute("INSERT INTO no_such_table VALUES (1)")  # fails after two statements took effect

    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        migrate(db, MIGRATIONS[:1] + [("002_half_good", half_good)])
    assert columns(db, "calls") == before_calls and tables(db) == before_tables
    assert applied(db) == ["001_calls_and_labels"] and not db.in_transaction
    # the real migrations still apply cleanly on top, in order
    assert migrate(db) == [name for name, _ in MIGRATIONS[1:]]
    assert applied(db) == [name for name, _ in MIGRATIONS]
    db.close()


def test_migrations_run_no_executescript():
    """executescript commits before it runs and then statement by statement."""
    import inspect

    for name, step in MIGRATIONS:
        assert "executescript" not in inspect.getsource(step), name


def test_a_new_journal_appears_complete_or_not_at_all(tmp_path):
    path = tmp_path / "journal.sqlite"
    (tmp_path / "journal.sqlite.new").write_bytes(b"left by a kill mid-creation")
    journal = Journal(path)
    journal.record_label(journal.start_call("k", "a", 1, "r"), "k", "m", "p", OracleReply({"d": 1}, "", 1, 1), 0.1, 0)
    journal.close()
    assert not (tmp_path / "journal.sqlite.new").exists()
    assert Journal(path).label("k").scores == {"d": 1}


def make_journal_with_labels(path, count: int = 300) -> None:
    journal = Journal(path)
    for i in range(count):
        call = journal.start_call(f"k{i}", f"a{i}", 1, "r")
        journal.record_label(call, f"k{i}", "m", "p", OracleReply({"d": i % 11}, "x" * 200, 1, 1), 0.1, 0)
    journal.close()


def write_zero_length(path) -> None:
    path.write_bytes(b"")


def write_garbage(path) -> None:
    path.write_bytes(b"this is not a database, not even close " * 200)


def write_other_database(path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()


def write_damaged(path) -> None:
    make_journal_with_labels(path)
    data = bytearray(path.read_bytes())
    data[4096 * 2:4096 * 6] = b"\xff" * (4096 * 4)  # pages 3-6 overwritten
    path.write_bytes(bytes(data))


def write_wrong_schema(path) -> None:
    """Every migration recorded, but a labels table of some other shape."""
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db)
    db.execute("DROP TABLE labels")
    db.execute("CREATE TABLE labels (key TEXT PRIMARY KEY, scores TEXT)")
    db.close()


def write_newer(path) -> None:
    make_journal_with_labels(path, 1)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO _migrations VALUES ('099_from_the_future', 'later')")
    db.commit()
    db.close()


BAD_JOURNALS = {
    "zero_length": (write_zero_length, "empty (0 bytes)"),
    "garbage": (write_garbage, "cannot be read"),
    "another_database": (write_other_database, "not a distill label journal"),
    "damaged": (write_damaged, "cannot be read"),
    "wrong_schema": (write_wrong_schema, "table labels lacks column(s) cost_usd"),
    "newer_distill": (write_newer, "newer distill"),
}


@pytest.mark.parametrize("kind", list(BAD_JOURNALS))
def test_an_unreadable_journal_stops_the_run_and_is_kept(tmp_path, kind, capsys):
    write, reason = BAD_JOURNALS[kind]
    out = tmp_path / "out"
    out.mkdir()
    path = out / "journal.sqlite"
    write(path)
    before = path.read_bytes()
    with pytest.raises(JournalError, match=re.escape(reason)):
        Journal(path)
    source = write_articles(tmp_path / "in.jsonl", 3)
    with FakeGemini() as fake:
        for extra in ((), ("--plan",)):
            assert run_cli(label_args(source, out, fake.url, *extra)) == 2
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and "Traceback" not in err, err
            assert lines[0].startswith(f"error: {path}: ") and reason in lines[0]
        assert fake.calls == []  # nothing paid again
    assert path.read_bytes() == before  # never replaced by a fresh journal
    assert read_output(out) == []
