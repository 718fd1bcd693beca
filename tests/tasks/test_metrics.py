"""Execution accuracy against hand-built cases (docs/execution-accuracy.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kubetune.tasks.text2sql import build_dataset, execution_accuracy, execution_match, load_split
from kubetune.tasks.text2sql.execution_accuracy import has_top_level_order_by


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "m.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT, c REAL)")
    # b has duplicates; c has a NULL.
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)",
                     [(1, "x", 0.5), (2, "y", 1.25), (3, "x", None), (4, "z", 2.0)])
    conn.commit()
    conn.close()
    return path


CASES = [
    # (gold, prediction, expected, why)
    ("SELECT a FROM t", "SELECT a FROM t ORDER BY a DESC", True, "row order free without ORDER BY"),
    ("SELECT a FROM t ORDER BY a", "SELECT a FROM t ORDER BY a DESC", False, "gold ORDER BY: order matters"),
    ("SELECT a FROM t ORDER BY a", "SELECT a FROM t ORDER BY -a DESC", True, "same order, other SQL"),
    ("SELECT a FROM (SELECT a FROM t ORDER BY a)", "SELECT a FROM t ORDER BY a DESC", True,
     "ORDER BY in a subquery is not top level"),
    ("SELECT a, b FROM t", "SELECT b, a FROM t", True, "columns may be permuted"),
    ("SELECT a, b, c FROM t", "SELECT c, a, b FROM t ORDER BY b", True, "3 columns permuted + rows"),
    ("SELECT 1, 1 UNION ALL SELECT 2, 2", "SELECT 1, 2 UNION ALL SELECT 2, 1", False,
     "column multisets agree but no permutation gives the same rows"),
    ("SELECT a FROM t", "SELECT a, b FROM t", False, "extra column"),
    ("SELECT b FROM t", "SELECT DISTINCT b FROM t", False, "duplicates count (multiset, not set)"),
    ("SELECT b FROM t WHERE a <= 3", "SELECT b FROM t WHERE a IN (3, 2, 1)", True, "same multiset"),
    ("SELECT b FROM t WHERE a IN (1, 2)", "SELECT b FROM t WHERE a IN (1, 3)", False, "x,y vs x,x"),
    ("SELECT 0.1 + 0.2", "SELECT 0.3", True, "floats rounded to 6 decimals"),
    ("SELECT 1.0 / 3", "SELECT 0.33333", False, "0.333333 vs 0.33333: differs at the 6th decimal"),
    ("SELECT 1.0 / 3", "SELECT 0.3333333", True, "equal after rounding"),
    ("SELECT AVG(a) FROM t", "SELECT 2.5", True, "AVG float"),
    ("SELECT SUM(a) FROM t", "SELECT 10.0", True, "int 10 equals float 10.0"),
    ("SELECT 5", "SELECT '5'", False, "text is not a number"),
    ("SELECT c FROM t WHERE a = 3", "SELECT NULL", True, "NULL equals NULL"),
    ("SELECT c FROM t WHERE a = 3", "SELECT 0", False, "NULL is not 0"),
    ("SELECT a FROM t", "SELEC a FROM t", False, "syntax error is wrong"),
    ("SELECT a FROM t", "SELECT a FROM t; DROP TABLE t", False, "refused statement is wrong"),
    ("SELECT a FROM t WHERE a > 100", "SELECT b FROM t WHERE b = 'nope'", True,
     "empty vs empty with the same column count"),
    ("SELECT a FROM t WHERE a > 100", "SELECT a, b FROM t WHERE a > 100", False,
     "empty vs empty with another column count"),
    ("SELECT a FROM t WHERE a > 100", "SELECT a FROM t", False, "empty vs non-empty"),
]


@pytest.mark.parametrize("gold, pred, expected, why", CASES, ids=[c[3] for c in CASES])
def test_execution_match_cases(db, gold, pred, expected, why):
    assert execution_match(db, pred, gold) is expected, why


def test_timeout_is_wrong_and_bounded(db):
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    assert execution_match(db, forever, "SELECT COUNT(*) FROM t", timeout_s=0.2) is False


def test_top_level_order_by_detection():
    assert has_top_level_order_by("SELECT a FROM t ORDER BY a;")
    assert has_top_level_order_by("select a from t order\n  by a desc limit 3")
    assert not has_top_level_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 2)")
    assert not has_top_level_order_by("SELECT a FROM t WHERE b = 'ORDER BY'")
    assert not has_top_level_order_by("SELECT a FROM t -- ORDER BY a")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ea")
    build_dataset(out, sizes={"train": 10, "rl": 10, "heldout_values": 10, "heldout_paraphrase": 10,
                              "heldout_database": 40})
    return out, load_split(out, "heldout_database")


def test_execution_accuracy_counts(dataset):
    data_dir, examples = dataset
    gold = [ex.query for ex in examples]
    perfect = execution_accuracy(examples, gold, data_dir)
    assert perfect["accuracy"] == 1.0 and perfect["correct"] == perfect["total"] == len(examples)
    # Break every third prediction: exactly those are wrong, and counted as errors.
    preds = [("SELEC" if i % 3 == 0 else q) for i, q in enumerate(gold)]
    broken = sum(1 for i in range(len(gold)) if i % 3 == 0)
    result = execution_accuracy(examples, preds, data_dir)
    assert result["correct"] == len(examples) - broken and result["errors"] == broken
    assert result["accuracy"] == pytest.approx((len(examples) - broken) / len(examples))
    assert result["matches"] == [i % 3 != 0 for i in range(len(gold))]
    expected_per_template = {}
    for i, ex in enumerate(examples):
        c, t = expected_per_template.get(ex.template_id, (0, 0))
        expected_per_template[ex.template_id] = (c + (i % 3 != 0), t + 1)
    assert {k: (v["correct"], v["total"]) for k, v in result["per_template"].items()} == expected_per_template
    assert result["per_database"]["shop"]["total"] == len(examples)
    # Mapping form: missing ids are wrong.
    by_id = {ex.id: ex.query for ex in examples[1:]}
    assert execution_accuracy(examples, by_id, data_dir)["correct"] == len(examples) - 1


def test_execution_accuracy_input_errors(dataset, tmp_path):
    data_dir, examples = dataset
    with pytest.raises(ValueError, match="predictions"):
        execution_accuracy(examples, ["SELECT 1"], data_dir)
    with pytest.raises(FileNotFoundError, match="shop"):
        execution_accuracy(examples[:1], ["SELECT 1"], tmp_path)
