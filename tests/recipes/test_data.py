"""Datum construction and SQL extraction: the text ↔ token boundary the trainer and evaluator share."""

from __future__ import annotations

from kubetune.models.tokenizer import train_tokenizer
from kubetune.recipes.data import supervised_datum, tokenize_pair
from kubetune.tasks.text2sql import extract_sql

TEXTS = ["CREATE TABLE t (id INTEGER, name TEXT);", "-- Question: How many rows?",
         "SELECT COUNT(*) FROM t;"] * 20


def test_supervised_datum_aligns_targets_and_weights() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    pair = tokenize_pair(tokenizer, "-- Question: How many rows?\n-- SQL:", " SELECT COUNT(*) FROM t;")
    assert pair.prompt[0] == tokenizer.bos_token_id and pair.completion[-1] == tokenizer.eos_token_id
    datum = supervised_datum(pair)
    inputs = datum.model_input.to_ints()
    targets = datum.loss_fn_inputs["target_tokens"].tolist()
    weights = datum.loss_fn_inputs["weights"].tolist()
    full = pair.prompt + pair.completion
    assert inputs == full[:-1] and targets == full[1:]
    # Exactly the completion tokens (answer + EOS) carry weight.
    assert [t for t, w in zip(targets, weights, strict=True) if w == 1.0] == pair.completion
    assert sum(weights) == len(pair.completion)
    assert tokenizer.decode(pair.completion, skip_special_tokens=True) == " SELECT COUNT(*) FROM t;"


def test_truncation_keeps_the_answer() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    pair = tokenize_pair(tokenizer, "CREATE TABLE t (id INTEGER, name TEXT);\n" * 5 + "-- SQL:", " SELECT 1;")
    datum = supervised_datum(pair, max_length=12)
    assert datum.model_input.length == 12
    assert sum(datum.loss_fn_inputs["weights"].tolist()) == len(pair.completion)


def test_extract_sql() -> None:
    assert extract_sql(" SELECT 1; SELECT 2;") == "SELECT 1;"
    assert extract_sql(" SELECT name FROM t") == "SELECT name FROM t"
    assert extract_sql("   ") == ""
