"""Examples, the prompt format, and reading a generated (or Spider-layout) dataset from disk."""

from __future__ import annotations

import functools
import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "rl", "heldout_values", "heldout_paraphrase", "heldout_database")
# What evaluation reports by default: values, wordings and a database that training never saw.
HELDOUT_SPLITS: tuple[str, ...] = SPLITS[2:]


@dataclass(frozen=True)
class Example:
    """One question with its gold SQL on one database.

    ``slots`` holds the slot values the question was instantiated with, as sorted
    ``(slot, value)`` pairs (empty for Spider examples); tests use it to prove split disjointness.
    """

    id: str
    db_id: str
    question: str
    query: str
    split: str
    template_id: str
    wording_id: int
    slots: tuple[tuple[str, str], ...] = ()

    @property
    def completion(self) -> str:
        """What the model should generate after the prompt (the trainer appends EOS)."""
        return " " + self.query

    def prompt(self, data_dir: str | Path) -> str:
        """The model prompt for this example, with the schema read from ``data_dir``'s database."""
        return format_prompt(schema_sql(db_path(data_dir, self.db_id)), self.question)

    def to_json(self) -> str:
        """One JSONL line (keys sorted so equal examples serialise to equal bytes)."""
        record = asdict(self)
        record["slots"] = dict(self.slots)
        return json.dumps(record, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, record: dict) -> Example:
        """Inverse of ``to_json`` (after ``json.loads``)."""
        slots = tuple(sorted((str(k), str(v)) for k, v in (record.get("slots") or {}).items()))
        return cls(
            id=str(record["id"]),
            db_id=str(record["db_id"]),
            question=str(record["question"]),
            query=str(record["query"]),
            split=str(record["split"]),
            template_id=str(record.get("template_id", "")),
            wording_id=int(record.get("wording_id", -1)),
            slots=slots,
        )


def format_prompt(schema: str, question: str) -> str:
    """The single source of truth for the text-to-SQL prompt.

    Args:
        schema: CREATE TABLE statements, one per line, each ending with ``;`` (see ``schema_sql``).
        question: the English question.

    Returns:
        ``"<schema>\\n-- Question: <question>\\n-- SQL:"``; the completion starts with a space.
    """
    return f"{schema}\n-- Question: {question}\n-- SQL:"


def db_path(data_dir: str | Path, db_id: str) -> Path:
    """Where a database lives in the Spider layout: ``<data_dir>/database/<db_id>/<db_id>.sqlite``."""
    return Path(data_dir) / "database" / db_id / f"{db_id}.sqlite"


def schema_sql(db_path: str | Path) -> str:
    """The CREATE TABLE text of a database, one statement per line, in creation order.

    Read from ``sqlite_master`` (read-only) and cached per file (path, size, mtime).

    Args:
        db_path: path to a SQLite file.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"SQLite database not found: {path}")
    stat = path.stat()
    return _schema_sql_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _schema_sql_cached(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a rewritten file gets re-read
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND sql IS NOT NULL ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return "\n".join(sql.strip().rstrip(";") + ";" for (sql,) in rows)


def load_split(data_dir: str | Path, split: str) -> list[Example]:
    """Read ``<data_dir>/<split>.jsonl`` written by ``build_dataset``.

    Raises:
        ValueError: unknown split name.
        FileNotFoundError: the split file is missing (the message says how to create it).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; generate the dataset first with "
            f"kubetune.tasks.text2sql.build_dataset({str(data_dir)!r})"
        )
    with path.open(encoding="utf-8") as f:
        return [Example.from_dict(json.loads(line)) for line in f if line.strip()]
