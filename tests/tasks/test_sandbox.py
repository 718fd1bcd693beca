"""The SQL sandbox: hostile queries fail or time out quickly and never change the database file."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from kubetune.tasks.text2sql import ExecResult, execute_sql

ROWS = 40


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "db" / "t.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)",
                     [(i, f"item{i}", i * 1.5) for i in range(1, ROWS + 1)])
    conn.commit()
    conn.close()
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
CTE_1000 = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) "

HOSTILE = [
    "DROP TABLE item",
    "DELETE FROM item",
    "UPDATE item SET price = 0",
    "INSERT INTO item VALUES (999, 'x', 1.0)",
    "CREATE TABLE evil (x)",
    "CREATE TEMP TABLE evil (x)",
    "ALTER TABLE item ADD COLUMN x",
    "ATTACH DATABASE 'other.sqlite' AS other",
    "DETACH DATABASE main",
    "PRAGMA writable_schema=1",
    "PRAGMA journal_mode=WAL",
    "PRAGMA journal_mode",
    "PRAGMA query_only=0",
    "BEGIN",
    "SAVEPOINT s",
    "VACUUM",
    "VACUUM INTO 'copy.sqlite'",
    "REINDEX",
    "SELECT load_extension('/tmp/evil')",
    "SELECT 1; DROP TABLE item",
    "SELECT * FROM item; DELETE FROM item;",
    "SELECT zeroblob(1000000000)",
    "/* sneaky */ DELETE FROM item",
    "SELEC 1",
    "",
    "SELECT * FROM missing_table",
]

RUNAWAY = [
    FOREVER,
    CTE_1000 + "SELECT COUNT(*) FROM c AS a, c AS b, c AS d, c AS e",  # 10^12 rows
    "SELECT COUNT(*) FROM item a, item b, item c, item d, item e, item f, item g",  # 40^7
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_sql_is_refused_without_touching_the_file(db, sql):
    before, files_before = _sha(db), sorted(db.parent.iterdir())
    result = execute_sql(db, sql, timeout_s=1.0)
    assert isinstance(result, ExecResult)
    assert not result.ok and result.error and not result.rows
    assert result.elapsed_s < 3.0
    assert _sha(db) == before and sorted(db.parent.iterdir()) == files_before
    # Still intact and readable.
    assert execute_sql(db, "SELECT COUNT(*) FROM item").rows == [(ROWS,)]


@pytest.mark.parametrize("sql", RUNAWAY)
def test_runaway_queries_time_out(db, sql):
    before = _sha(db)
    result = execute_sql(db, sql, timeout_s=0.3)
    assert not result.ok and result.timed_out and "timeout" in result.error
    assert result.elapsed_s < 3.0
    assert _sha(db) == before


def test_clear_messages(db):
    assert "not authorized" in execute_sql(db, "SELECT load_extension('x')").error
    assert "multiple statements" in execute_sql(db, "SELECT 1; SELECT 2").error
    assert "only SELECT" in execute_sql(db, "DELETE FROM item").error
    assert "not found" in execute_sql(db.parent / "nope.sqlite", "SELECT 1").error


def test_select_returns_rows_and_columns_like_sqlite(db):
    sql = "SELECT name, price FROM item WHERE price > 30 ORDER BY id"
    result = execute_sql(db, sql)
    conn = sqlite3.connect(db)
    expected = conn.execute(sql).fetchall()
    conn.close()
    assert result.ok and result.error is None and not result.timed_out and not result.truncated
    assert result.rows == expected and len(expected) > 5
    assert result.columns == ["name", "price"]
    # Read-only conveniences stay available.
    assert execute_sql(db, "SELECT 1;").rows == [(1,)]
    assert execute_sql(db, "  -- comment\n WITH x AS (SELECT 2) SELECT * FROM x").rows == [(2,)]
    assert [r[1] for r in execute_sql(db, "PRAGMA table_info(item)").rows] == ["id", "name", "price"]


def test_truncation_at_max_rows(db):
    cut = execute_sql(db, "SELECT id FROM item ORDER BY id", max_rows=5)
    assert cut.ok and cut.truncated and cut.rows == [(i,) for i in range(1, 6)]
    whole = execute_sql(db, "SELECT id FROM item", max_rows=ROWS)
    assert whole.ok and not whole.truncated and len(whole.rows) == ROWS
    # A huge result is cut, not materialised.
    big = execute_sql(db, "SELECT * FROM item a, item b, item c", max_rows=100)
    assert big.ok and big.truncated and len(big.rows) == 100
