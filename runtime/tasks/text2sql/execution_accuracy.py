"""Execution accuracy: does the predicted SQL return the same result as the gold SQL?

Definition (docs/execution-accuracy.md has the reasoning and worked examples):

* Both queries run in the sandbox; a prediction that errors or times out is wrong.
* Values are normalised: floats rounded to ``FLOAT_DIGITS`` decimals (``5`` equals ``5.0``),
  NULL equals NULL, strings compare exactly (``'5'`` is not ``5``).
* Rows are compared as a multiset (duplicates count), or as a list when the gold query has a
  top-level ``ORDER BY``.
* Columns may come in any order: the prediction matches if *some* permutation of its columns
  matches (its column count must equal gold's). Column names are ignored.
* Two empty results match only when they have the same number of columns. (The generator never
  emits gold queries with empty results, because an empty result is what a wrong WHERE returns.)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from .dataset import Example, db_path
from .sandbox import ExecResult, execute_sql

FLOAT_DIGITS = 6
_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.IGNORECASE)


def _top_level_text(sql: str) -> str:
    """``sql`` with string literals, quoted identifiers, comments and parenthesised parts blanked."""
    out = []
    depth = 0
    i = 0
    while i < len(sql):
        ch = sql[i]
        if ch in "'\"`[":
            close = "]" if ch == "[" else ch
            end = sql.find(close, i + 1)
            i = len(sql) if end < 0 else end + 1
            out.append(" ")
            continue
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = len(sql) if end < 0 else end + 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        out.append(ch if depth == 0 and ch != ")" else " ")
        i += 1
    return "".join(out)


def has_top_level_order_by(sql: str) -> bool:
    """True when the outermost query sorts its result (ORDER BY inside a subquery does not count)."""
    return bool(_ORDER_BY.search(_top_level_text(sql)))


def _normalise(value: object) -> object:
    if isinstance(value, float):
        return round(value, FLOAT_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0
    return value


def _normalise_rows(rows: Sequence[tuple]) -> list[tuple]:
    return [tuple(_normalise(v) for v in row) for row in rows]


def results_match(pred: ExecResult, gold: ExecResult, ordered: bool) -> bool:
    """Compare two sandbox results under the definition in the module docstring.

    Args:
        pred: result of the predicted query.
        gold: result of the gold query.
        ordered: compare row order too (gold has a top-level ORDER BY).
    """
    if not (pred.ok and gold.ok):
        return False
    if pred.truncated != gold.truncated:  # a cut-off result cannot equal a complete one
        return False
    n_cols = len(gold.columns)
    if len(pred.columns) != n_cols or len(pred.rows) != len(gold.rows):
        return False
    gold_rows = _normalise_rows(gold.rows)
    pred_rows = _normalise_rows(pred.rows)
    if not gold_rows:
        return True  # both empty with the same column count

    def column(rows: list[tuple], j: int) -> object:
        values = [row[j] for row in rows]
        return values if ordered else Counter(values)

    # Prune: gold column j can only be pred column c if their value multisets (lists) agree.
    gold_cols = [column(gold_rows, j) for j in range(n_cols)]
    pred_cols = [column(pred_rows, c) for c in range(n_cols)]
    candidates = [[c for c in range(n_cols) if pred_cols[c] == gold_cols[j]] for j in range(n_cols)]
    target = gold_rows if ordered else Counter(gold_rows)

    def search(j: int, perm: list[int], used: set[int]) -> bool:
        if j == n_cols:
            permuted = [tuple(row[c] for c in perm) for row in pred_rows]
            return (permuted if ordered else Counter(permuted)) == target
        for c in candidates[j]:
            if c not in used:
                perm.append(c)
                used.add(c)
                if search(j + 1, perm, used):
                    return True
                perm.pop()
                used.discard(c)
        return False

    return search(0, [], set())


def execution_match(db_path: str | Path, pred_sql: str, gold_sql: str, timeout_s: float = 1.0,
                    max_rows: int = 10_000) -> bool:
    """Whether ``pred_sql`` returns the same result as ``gold_sql`` on ``db_path``.

    Args:
        db_path: SQLite file (opened read-only in the sandbox).
        pred_sql: model output (hostile input).
        gold_sql: reference query; if it fails, nothing can match it and the result is False.
        timeout_s: per-query time budget.
        max_rows: rows fetched per query.
    """
    gold = execute_sql(db_path, gold_sql, timeout_s=timeout_s, max_rows=max_rows)
    pred = execute_sql(db_path, pred_sql, timeout_s=timeout_s, max_rows=max_rows)
    return results_match(pred, gold, ordered=has_top_level_order_by(gold_sql))


def _accuracy(correct: int, total: int) -> float:
    return correct / total if total else 0.0


def execution_accuracy(examples: Sequence[Example], predictions: Sequence[str] | Mapping[str, str],
                       data_dir: str | Path, timeout_s: float = 1.0) -> dict:
    """Execution accuracy of predictions over examples, overall and per template / database.

    Args:
        examples: the evaluated examples.
        predictions: predicted SQL aligned with ``examples``, or a mapping ``example.id -> SQL``
            (a missing id counts as wrong).
        data_dir: dataset directory holding ``database/<db_id>/<db_id>.sqlite``.
        timeout_s: per-query time budget in the sandbox.

    Returns:
        ``{"accuracy", "correct", "total", "errors", "timeouts", "per_template", "per_database",
        "matches"}``; ``per_*`` map a key to ``{"accuracy", "correct", "total"}`` and ``matches``
        is the per-example list of booleans.

    Raises:
        ValueError: predictions and examples differ in length, or a gold query fails (a data bug).
        FileNotFoundError: a database is missing from ``data_dir``.
    """
    if not isinstance(predictions, Mapping) and len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    gold_cache: dict[tuple[str, str], ExecResult] = {}
    matches: list[bool] = []
    errors = timeouts = 0
    per_template: dict[str, list[int]] = {}
    per_database: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        path = db_path(data_dir, example.db_id)
        if not path.is_file():
            raise FileNotFoundError(f"database {example.db_id!r} of example {example.id} not found at {path}")
        key = (example.db_id, example.query)
        if key not in gold_cache:
            gold_cache[key] = execute_sql(path, example.query, timeout_s=max(timeout_s, 5.0))
        gold = gold_cache[key]
        if not gold.ok:
            raise ValueError(f"gold query of example {example.id} fails: {gold.error}\n{example.query}")
        pred_sql = predictions.get(example.id) if isinstance(predictions, Mapping) else predictions[i]
        if pred_sql is None:
            match = False
        else:
            pred = execute_sql(path, pred_sql, timeout_s=timeout_s)
            errors += not pred.ok
            timeouts += pred.timed_out
            match = results_match(pred, gold, ordered=has_top_level_order_by(example.query))
        matches.append(match)
        for table, name in ((per_template, example.template_id), (per_database, example.db_id)):
            counts = table.setdefault(name, [0, 0])
            counts[0] += match
            counts[1] += 1
    correct = sum(matches)

    def breakdown(table: dict[str, list[int]]) -> dict[str, dict]:
        return {k: {"accuracy": _accuracy(c, t), "correct": c, "total": t}
                for k, (c, t) in sorted(table.items())}

    return {
        "accuracy": _accuracy(correct, len(examples)),
        "correct": correct,
        "total": len(examples),
        "errors": errors,
        "timeouts": timeouts,
        "per_template": breakdown(per_template),
        "per_database": breakdown(per_database),
        "matches": matches,
    }
