"""The generated text-to-SQL task: determinism, schema limits, templates, split disjointness, files."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import string
from pathlib import Path

import pytest

from kubetune.tasks.text2sql import (
    SPLITS,
    Example,
    build_dataset,
    db_path,
    execute_sql,
    format_prompt,
    load_split,
    schema_sql,
    task_statistics,
)
from kubetune.tasks.text2sql.databases import HELDOUT_DB_IDS, SPECS, TRAIN_DB_IDS
from kubetune.tasks.text2sql.templates import (
    TEMPLATES,
    VALUE_SLOTS,
    WORDING_GROUPS,
    render,
    slot_kind,
)

SMALL = {"train": 120, "rl": 60, "heldout_values": 40, "heldout_paraphrase": 40, "heldout_database": 40}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The default-size dataset, built once for the module."""
    out = tmp_path_factory.mktemp("text2sql")
    build_dataset(out, seed=0)
    return out


@pytest.fixture(scope="module")
def splits(data_dir) -> dict[str, list[Example]]:
    return {split: load_split(data_dir, split) for split in SPLITS}


def _file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    a = build_dataset(tmp_path / "a", seed=3, sizes=SMALL)
    b = build_dataset(tmp_path / "b", seed=3, sizes=SMALL)
    c = build_dataset(tmp_path / "c", seed=4, sizes=SMALL)
    digests_a = _file_digests(tmp_path / "a")
    assert digests_a == _file_digests(tmp_path / "b")
    assert any(name.endswith(".sqlite") for name in digests_a)
    assert a.content_hash == b.content_hash != c.content_hash
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()


def test_default_sizes_and_manifest(data_dir, splits):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    counts = {split: len(examples) for split, examples in splits.items()}
    assert counts == manifest["counts"]
    assert 600 <= counts["train"] <= 1000 and counts["rl"] == 300
    for split in ("heldout_values", "heldout_paraphrase", "heldout_database"):
        assert 100 <= counts[split] <= 200
    for split, examples in splits.items():
        assert all(ex.split == split for ex in examples)
        assert len({ex.id for ex in examples}) == len(examples)
        assert len({(ex.db_id, ex.question) for ex in examples}) == len(examples), "duplicate questions"
        lines = (data_dir / f"{split}.jsonl").read_text().splitlines()
        assert [json.loads(line)["id"] for line in lines] == [ex.id for ex in examples]
        assert set(json.loads(lines[0])) >= {"id", "db_id", "question", "query", "split", "template_id",
                                             "wording_id"}


def test_sizes_are_configurable_and_validated(tmp_path):
    info = build_dataset(tmp_path, sizes={"train": 50, "rl": 7})
    assert info.counts["train"] == 50 and info.counts["rl"] == 7
    assert len(load_split(tmp_path, "rl")) == 7
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset(tmp_path, sizes={"validation": 3})


def test_databases_are_compact_realistic_and_in_spider_layout(data_dir):
    tables_json = {entry["db_id"]: entry for entry in json.loads((data_dir / "tables.json").read_text())}
    assert len(SPECS) >= 4 and set(tables_json) == set(TRAIN_DB_IDS) | set(HELDOUT_DB_IDS)
    schemas = set()
    for db_id in SPECS:
        path = data_dir / "database" / db_id / f"{db_id}.sqlite"
        assert path.is_file() and db_path(data_dir, db_id) == path
        conn = sqlite3.connect(path)
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert 2 <= len(tables) <= 3
        assert tables_json[db_id]["table_names_original"] == tables
        for t_index, table in enumerate(tables):
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            assert 3 <= len(columns) <= 5
            listed = [c for t, c in tables_json[db_id]["column_names_original"] if t == t_index]
            assert listed == columns
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] >= 10
        ddl = [sql for (sql,)
               in conn.execute("SELECT sql FROM sqlite_master WHERE type='table' ORDER BY rowid")]
        conn.close()
        text = schema_sql(path)
        assert text == "\n".join(s + ";" for s in ddl)
        assert len(text) <= 400
        schemas.add(text)
    assert len(schemas) == len(SPECS), "schemas must differ"


def test_at_least_25_templates_with_partitioned_wordings():
    assert len(TEMPLATES) >= 25
    assert len({t.id for t in TEMPLATES}) == len(TEMPLATES)
    groups = list(WORDING_GROUPS.values())
    for template in TEMPLATES:
        assert len(template.wordings) >= 5
        assert len(set(template.wordings)) == len(template.wordings)
        ids = [i for group in groups for i in group]
        assert sorted(ids) == list(range(len(template.wordings))), "groups must partition the wordings"
        for wording in template.wordings:
            fields = {f for _, f, _, _ in string.Formatter().parse(wording) if f}
            assert fields & set(VALUE_SLOTS) == set(template.slots), (template.id, wording)
    # Every template instantiates on every database (schema-generic roles).
    for spec in SPECS.values():
        for template in TEMPLATES:
            values = {s: "X" if slot_kind(s) in ("cat", "name", "grp", "gcat") else 3 for s in template.slots}
            for wording_id in range(len(template.wordings)):
                question, sql = render(template, wording_id, spec.words, spec.identifiers(), values)
                assert "{" not in question and "{" not in sql


def test_sql_constructs_are_covered(splits):
    queries = [ex.query for ex in splits["train"]]
    for construct in ("COUNT(", "AVG(", "MIN(", "MAX(", "SUM(", " WHERE ", " AND ", " OR ", " ORDER BY ",
                      " LIMIT ", " GROUP BY ", " HAVING ", " JOIN ", "DISTINCT"):
        assert any(construct in q for q in queries), construct


def _wordings(examples):
    return {(ex.template_id, ex.wording_id) for ex in examples}


def test_splits_use_disjoint_wordings(splits):
    train, rl, hp = (_wordings(splits[s]) for s in ("train", "rl", "heldout_paraphrase"))
    assert train and rl and hp
    assert not train & rl and not train & hp and not rl & hp
    assert _wordings(splits["heldout_values"]) <= train
    # The same holds for the text: no RL or paraphrase question was ever an SFT question.
    train_questions = {ex.question for ex in splits["train"] + splits["heldout_values"]}
    for split in ("rl", "heldout_paraphrase"):
        assert not train_questions & {ex.question for ex in splits[split]}
    # And the wording strings themselves differ between groups.
    for template in TEMPLATES:
        texts = {group: {template.wordings[i] for i in ids} for group, ids in WORDING_GROUPS.items()}
        assert not texts["train"] & texts["rl"]
        assert not texts["heldout_paraphrase"] & (texts["train"] | texts["rl"])


def _string_literals(sql: str) -> set[str]:
    return {m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", sql)}


def test_splits_use_disjoint_slot_values(splits):
    def values(split):
        return {(ex.db_id, slot_kind(slot), value) for ex in splits[split] for slot, value in ex.slots}

    seen_in_training = values("train") | values("rl")
    assert values("heldout_values") and values("heldout_paraphrase")
    assert not values("heldout_values") & seen_in_training
    assert not values("heldout_paraphrase") & seen_in_training
    assert all(ex.slots for ex in splits["heldout_values"]), "slot-less questions would repeat train"
    # The recorded slots are the ones in the SQL ...
    for examples in splits.values():
        for ex in examples:
            for slot, value in ex.slots:
                literal = f"'{value}'" if slot_kind(slot) in ("cat", "name", "grp", "gcat") else value
                assert literal in ex.query, (ex.id, slot, value)
    # ... and, independently of them, no string literal of a held-out split's SQL occurs in training SQL.
    def literals(split):
        return {(ex.db_id, lit) for ex in splits[split] for lit in _string_literals(ex.query)}

    trained = literals("train") | literals("rl")
    assert not literals("heldout_values") & trained
    assert not literals("heldout_paraphrase") & trained


def test_splits_use_disjoint_databases(splits):
    for split in ("train", "rl", "heldout_values", "heldout_paraphrase"):
        assert {ex.db_id for ex in splits[split]} == set(TRAIN_DB_IDS)
    assert {ex.db_id for ex in splits["heldout_database"]} == set(HELDOUT_DB_IDS)
    assert not set(TRAIN_DB_IDS) & set(HELDOUT_DB_IDS)
    assert len({ex.template_id for ex in splits["heldout_database"]}) == len(TEMPLATES)


def test_every_gold_query_executes_with_a_nonempty_result(data_dir, splits):
    for examples in splits.values():
        for ex in examples:
            result = execute_sql(db_path(data_dir, ex.db_id), ex.query)
            assert result.ok, (ex.id, ex.query, result.error)
            assert result.rows and not result.truncated, (ex.id, ex.query)
            assert any(v not in (None, 0) for row in result.rows for v in row), (ex.id, ex.query)


def test_gold_sql_canonical_style(splits):
    keywords = (r"\b(select|from|where|and|or|group by|order by|having|limit|join|on|distinct|count|avg|sum"
                r"|min|max|desc|asc)\b")
    for examples in splits.values():
        for ex in examples:
            assert ex.query.endswith(";") and ex.query.count(";") == 1
            assert '"' not in ex.query
            outside_quotes = re.sub(r"'(?:[^']|'')*'", "''", ex.query)
            assert not re.search(keywords, outside_quotes), ex.query  # lowercase keyword


def test_prompt_format_and_completion(data_dir, splits):
    assert format_prompt("CREATE TABLE t (a INTEGER);", "How many?") == (
        "CREATE TABLE t (a INTEGER);\n-- Question: How many?\n-- SQL:"
    )
    ex = splits["train"][0]
    prompt = ex.prompt(data_dir)
    assert prompt == f"{schema_sql(db_path(data_dir, ex.db_id))}\n-- Question: {ex.question}\n-- SQL:"
    assert ex.completion == " " + ex.query and ex.completion.startswith(" SELECT ")
    # Short enough for a tiny model: ~4 characters per BPE token keeps this under ~200 tokens.
    longest = max(len(e.prompt(data_dir) + e.completion) for examples in splits.values() for e in examples)
    assert longest < 600


def test_load_split_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        load_split(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="build_dataset"):
        load_split(tmp_path, "train")


def test_task_statistics_match_the_files(data_dir):
    stats = task_statistics(data_dir)
    assert stats["templates"] == len(TEMPLATES)
    for split in SPLITS:
        records = [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]
        assert stats["splits"][split]["examples"] == len(records)
        assert stats["splits"][split]["databases"] == sorted({r["db_id"] for r in records})
        assert stats["splits"][split]["wordings"] == len({(r["template_id"], r["wording_id"])
                                                          for r in records})
    assert stats["wordings_per_group"] == {k: len(v) for k, v in WORDING_GROUPS.items()}
