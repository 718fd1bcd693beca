"""Reward functions for text-to-SQL RL: pure functions of (database, completion, gold SQL).

Every completion is hostile input: only its first statement is run, in the sandbox of
``sandbox.execute_sql`` (read-only, authorizer, time limit, row cap), so a reward never writes to
the database and never takes longer than its time budget. Three variants (docs/text2sql.md):

* ``execution``: 1.0 when the first statement's result matches the gold result under the
  execution-accuracy definition (docs/execution-accuracy.md), else 0.0.
* ``format``: 1.0 when the first statement is a read-only query that runs without error, else 0.0.
  The valid-SQL signal, useful alone early in training or as a metric.
* ``shaped``: 1.0 when correct; otherwise ``VALID_CREDIT`` for a query that runs plus up to
  ``OVERLAP_CREDIT`` times the overlap of its result with the gold result (multiset Jaccard of
  rows, values normalised, each row's values sorted so column order is free). A wrong answer
  scores at most ``VALID_CREDIT + OVERLAP_CREDIT`` = 0.5 < 1.0: it never outscores a right one,
  and groups of all-wrong samples still carry a gradient toward the right rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .execution_accuracy import _normalise_rows, has_top_level_order_by, results_match
from .sandbox import ExecResult, execute_sql

RewardVariant = Literal["execution", "format", "shaped"]
REWARD_VARIANTS: tuple[str, ...] = ("execution", "format", "shaped")
VALID_CREDIT = 0.1
OVERLAP_CREDIT = 0.4


@dataclass(frozen=True)
class Reward:
    """A reward with what it was made of (for logging: valid-SQL rate, accuracy, timeouts)."""

    value: float
    sql: str  # the statement that was run
    valid: bool  # ran without error within its budget
    correct: bool  # matched the gold result
    timed_out: bool = False
    error: str | None = None


def extract_sql(completion: str) -> str:
    """The first statement of a completion: text up to and including the first ``;``."""
    text = completion.strip()
    end = text.find(";")
    return text[: end + 1] if end >= 0 else text


def _row_overlap(pred: ExecResult, gold: ExecResult) -> float:
    """Multiset Jaccard similarity of the two results' rows (column order ignored)."""
    pred_rows = Counter(tuple(sorted(map(repr, row))) for row in _normalise_rows(pred.rows))
    gold_rows = Counter(tuple(sorted(map(repr, row))) for row in _normalise_rows(gold.rows))
    union = sum((pred_rows | gold_rows).values())
    return sum((pred_rows & gold_rows).values()) / union if union else 1.0


def text2sql_reward(db_path: str | Path, completion: str, gold_sql: str, variant: RewardVariant = "execution",
                    *, timeout_s: float = 1.0, max_rows: int = 10_000,
                    gold: ExecResult | None = None) -> Reward:
    """Scores one completion.

    Args:
        db_path: the example's SQLite file (opened read-only).
        completion: model output; only its first statement is run.
        gold_sql: the reference query.
        variant: ``execution``, ``format`` or ``shaped`` (module docstring).
        timeout_s: time budget per query; a query that runs out of it scores as invalid.
        max_rows: rows fetched per query.
        gold: the gold query's result, if already computed (a group of samples shares it).

    Raises:
        ValueError: an unknown variant.
    """
    if variant not in REWARD_VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; choose one of {', '.join(REWARD_VARIANTS)}")
    sql = extract_sql(completion)
    pred = execute_sql(db_path, sql, timeout_s=timeout_s, max_rows=max_rows)
    if variant == "format":
        return Reward(float(pred.ok), sql, pred.ok, False, pred.timed_out, pred.error)
    if gold is None:
        gold = execute_sql(db_path, gold_sql, timeout_s=timeout_s, max_rows=max_rows)
    correct = results_match(pred, gold, ordered=has_top_level_order_by(gold_sql))
    if variant == "execution" or correct or not pred.ok:
        value = 1.0 if correct else 0.0
    else:
        value = VALID_CREDIT + (OVERLAP_CREDIT * _row_overlap(pred, gold) if gold.ok else 0.0)
    return Reward(value, sql, pred.ok, correct, pred.timed_out, pred.error)
