"""Run model-written SQL against a SQLite file as hostile input.

Layers, each enough on its own for the write case and together for the rest:

1. The file is opened read-only and immutable through a URI (``mode=ro&immutable=1``): SQLite
   cannot write it, and takes no locks / creates no journal next to it.
2. An authorizer allows only reading: SELECT, READ, FUNCTION (minus ``load_extension``), recursive
   CTEs, and a short list of schema-introspection PRAGMAs without a value. Everything else
   (INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, ATTACH, DETACH, TRANSACTION, PRAGMA writes...)
   is denied at prepare time.
3. Extension loading is disabled on the connection.
4. A deadline checked by a progress handler every ``PROGRESS_STEPS`` VM instructions interrupts
   runaway queries (infinite recursive CTEs, huge cross joins).
5. Per-connection limits cap string/blob length and SQL length (memory bombs such as
   ``zeroblob(1e9)``), and at most ``max_rows + 1`` rows are fetched.
6. Only one statement: the driver refuses a second statement after the first, and the statement
   must start with SELECT, WITH, VALUES or PRAGMA (REINDEX, VACUUM... never reach SQLite).

``execute_sql`` never raises for bad SQL: it returns ``ExecResult(ok=False, error=...)``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRESS_STEPS = 1000  # VM instructions between deadline checks (~microseconds each)
MAX_VALUE_BYTES = 1_000_000  # longest string/blob a query may build
MAX_SQL_CHARS = 100_000

# Read-only introspection pragmas that a model might reasonably use; only when given no value
# (``PRAGMA table_info(t)`` passes the table name as the argument, which is a read).
_SAFE_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                           "foreign_key_list"})
_DENIED_FUNCTIONS = frozenset({"load_extension"})
_READ_KEYWORDS = frozenset({"SELECT", "WITH", "VALUES", "PRAGMA"})
# Leading whitespace and comments (``-- ...`` lines and ``/* ... */`` blocks), then the first word.
_FIRST_WORD = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.DOTALL)


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed query.

    ``rows`` holds at most ``max_rows`` rows; ``truncated`` says there were more.
    """

    ok: bool
    rows: list[tuple] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    truncated: bool = False
    elapsed_s: float = 0.0


def _authorizer(action: int, arg1: str | None, arg2: str | None, db_name: str | None,
                trigger: str | None) -> int:
    """Allow reads only; called by SQLite for every operation while preparing a statement."""
    del db_name, trigger
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        # For SQLITE_FUNCTION, arg2 is the function name (arg1 is unused).
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _SAFE_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _open_readonly(db_path: Path) -> sqlite3.Connection:
    uri = db_path.resolve().as_uri() + "?mode=ro&immutable=1"
    # isolation_level=None: the driver never issues an implicit BEGIN (which the authorizer denies).
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    if hasattr(conn, "enable_load_extension"):  # absent when Python was built without extension support
        conn.enable_load_extension(False)
    if hasattr(conn, "setlimit"):  # Python >= 3.11; on 3.10 the deadline still bounds the damage
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_CHARS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorizer)
    return conn


def execute_sql(db_path: str | Path, sql: str, timeout_s: float = 1.0, max_rows: int = 10_000) -> ExecResult:
    """Execute one SELECT against ``db_path`` in the sandbox described in the module docstring.

    Args:
        db_path: SQLite file; never modified.
        sql: a single statement (a trailing ``;`` is fine, a second statement is an error).
        timeout_s: wall-clock budget for prepare + execution + fetch.
        max_rows: rows kept; one more is fetched to set ``truncated``.

    Returns:
        ExecResult; ``ok=False`` with ``error`` set for any failure (never raises for bad SQL).
    """
    start = time.monotonic()
    deadline = start + timeout_s

    def elapsed() -> float:
        return time.monotonic() - start

    if not isinstance(sql, str) or not sql.strip():
        return ExecResult(ok=False, error="empty query", elapsed_s=elapsed())
    first = _FIRST_WORD.match(sql)
    if first is None or first.group(1).upper() not in _READ_KEYWORDS:
        return ExecResult(ok=False, error="only SELECT queries are allowed (statement must start with "
                          "SELECT, WITH, VALUES or PRAGMA)", elapsed_s=elapsed())
    path = Path(db_path)
    if not path.is_file():
        return ExecResult(ok=False, error=f"database file not found: {path}", elapsed_s=elapsed())

    conn = None
    try:
        conn = _open_readonly(path)
        # Returning non-zero aborts the running statement with "interrupted".
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
        cursor = conn.execute(sql)
        rows = cursor.fetchmany(max_rows + 1)
        columns = [d[0] for d in cursor.description or ()]
        truncated = len(rows) > max_rows
        return ExecResult(ok=True, rows=[tuple(r) for r in rows[:max_rows]], columns=columns,
                          truncated=truncated, elapsed_s=elapsed())
    except Exception as exc:  # hostile input: every failure becomes a result, never a raise
        timed_out = time.monotonic() > deadline and "interrupt" in str(exc).lower()
        message = f"timeout after {timeout_s:g} s" if timed_out else _describe(exc)
        return ExecResult(ok=False, error=message, timed_out=timed_out, elapsed_s=elapsed())
    finally:
        if conn is not None:
            conn.close()


def _describe(exc: Exception) -> str:
    text = str(exc)
    if "not authorized" in text:
        text += " (only read-only SELECT statements are allowed)"
    elif "one statement at a time" in text:
        text = "multiple statements are not allowed; submit a single SELECT"
    return f"{type(exc).__name__}: {text}"
