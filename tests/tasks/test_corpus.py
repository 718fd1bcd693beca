"""The pretraining corpus holds train material only: no RL/held-out wording, value or database."""

from __future__ import annotations

import re
import string

import pytest

from kubetune.tasks.text2sql import SPLITS, pretraining_corpus
from kubetune.tasks.text2sql.databases import HELDOUT_DB_IDS, SPECS, TRAIN_DB_IDS, partition_pool, slot_pools
from kubetune.tasks.text2sql.generator import generate_splits
from kubetune.tasks.text2sql.templates import TEMPLATES, VALUE_SLOTS, WORDING_GROUPS


@pytest.fixture(scope="module")
def splits():
    return generate_splits(seed=0)


@pytest.fixture(scope="module")
def corpus():
    return pretraining_corpus(seed=0)


@pytest.fixture(scope="module")
def corpus_lines(corpus):
    return [line for doc in corpus for line in doc.splitlines()]


def test_corpus_is_deterministic_and_nonempty(corpus):
    assert corpus == pretraining_corpus(seed=0)
    assert corpus != pretraining_corpus(seed=1)
    assert len(corpus) > 50 and all(doc.strip() for doc in corpus)


def test_every_line_is_train_schema_train_sql_or_train_question(splits, corpus_lines):
    train = splits["train"]
    schema_lines = {line + ";" for db_id in TRAIN_DB_IDS for line in SPECS[db_id].ddl()}
    sql, questions = {ex.query for ex in train}, {ex.question for ex in train}
    kinds = {"schema": 0, "sql": 0, "question": 0}
    for line in corpus_lines:
        kind = ("schema" if line in schema_lines else "sql" if line in sql
                else "question" if line in questions else None)
        assert kind is not None, f"not from the train split: {line!r}"
        kinds[kind] += 1
    assert min(kinds.values()) > 0
    assert {line for line in corpus_lines if line in questions} == questions  # all train questions used


def test_questions_and_sql_live_in_separate_documents(splits, corpus):
    questions = {ex.question for ex in splits["train"]}
    for doc in corpus:
        lines = doc.splitlines()
        has_question = any(line in questions for line in lines)
        has_sql = any(line.startswith("SELECT ") for line in lines)
        assert not (has_question and has_sql), doc


def _wording_regex(wording: str, words: dict[str, str]) -> re.Pattern:
    """A wording with its words filled in and any slot value allowed, as a full-line regex."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(wording):
        parts.append(re.escape(literal))
        if field in VALUE_SLOTS:
            parts.append(".+?")
        elif field:
            parts.append(re.escape(words[field]))
    pattern = "".join(parts)
    return re.compile("(?i)" + pattern)  # case-insensitive: the first letter is capitalised


def test_no_rl_or_heldout_wording_in_corpus(splits, corpus, corpus_lines):
    text = "\n".join(corpus)
    for split in SPLITS:
        if split != "train":
            for ex in splits[split]:
                assert ex.question not in text, (split, ex.question)
    # Stronger: no line matches an RL or paraphrase wording with *any* slot values.
    unseen = WORDING_GROUPS["rl"] + WORDING_GROUPS["heldout_paraphrase"]
    for db_id in TRAIN_DB_IDS:
        words = SPECS[db_id].words
        patterns = [_wording_regex(t.wordings[i], words) for t in TEMPLATES for i in unseen]
        for line in corpus_lines:
            assert not any(p.fullmatch(line) for p in patterns), line
        # Control: the same matching does find the train wordings, so the check above can fail.
        seen = [_wording_regex(t.wordings[i], words) for t in TEMPLATES for i in WORDING_GROUPS["train"]]
        assert sum(any(p.fullmatch(line) for line in corpus_lines) for p in seen) > len(seen) // 2


def test_no_heldout_database_or_heldout_value_in_corpus(corpus):
    text = "\n".join(corpus)
    train_identifiers = {w for db_id in TRAIN_DB_IDS for ddl in SPECS[db_id].ddl()
                         for w in re.findall(r"\w+", ddl)}
    forbidden = set()
    for db_id in HELDOUT_DB_IDS:
        spec = SPECS[db_id]
        forbidden |= {db_id, spec.group_table, spec.entity_table, spec.gcat_col, spec.gnum_col, spec.cat_col,
                      spec.num_col, spec.fk_col, spec.name_col} - train_identifiers
        forbidden |= {spec.words[k] for k in ("ent_s", "ent_p", "grp_s", "grp_p", "cat_w", "cat_p", "gcat_w",
                                              "gcat_p", "gnum_w", "num_w")}
        for kind in ("cat", "gcat", "grp", "name"):
            forbidden |= set(slot_pools(spec, 0)[kind])
    for db_id in TRAIN_DB_IDS:
        pools = slot_pools(SPECS[db_id], 0)
        for kind in ("cat", "gcat", "grp", "name"):
            forbidden |= set(partition_pool(pools[kind], "heldout"))
    assert len(forbidden) > 50
    for word in sorted(forbidden):
        assert not re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE), word
