"""Loading a Spider-format folder (a fixture the test writes itself; nothing is downloaded)."""

from __future__ import annotations

import json
import shutil

import pytest

from kubetune.tasks.text2sql import db_path, execute_sql, load_spider
from kubetune.tasks.text2sql.spider import write_spider_fixture


@pytest.fixture(scope="module")
def spider_root(tmp_path_factory):
    return write_spider_fixture(tmp_path_factory.mktemp("spider"), per_split=6)


def test_load_spider_reads_fields_and_gold_executes(spider_root, tmp_path):
    records = json.loads((spider_root / "dev.json").read_text())
    examples = load_spider(spider_root, "dev.json", cache_dir=tmp_path / "cache")
    assert len(examples) == len(records) == 18
    for ex, record in zip(examples, records, strict=True):
        assert (ex.question, ex.query, ex.db_id) == (record["question"], record["query"], record["db_id"])
        assert ex.split == "dev" and ex.template_id == "spider"
        result = execute_sql(db_path(spider_root, ex.db_id), ex.query)
        assert result.ok and result.rows, (ex.query, result.error)
    assert {ex.db_id for ex in examples} >= {"shop"}
    train = load_spider(spider_root, "train_spider.json", cache_dir=tmp_path / "cache")
    assert len(train) == 6 and train[0].split == "train_spider"
    assert train[0].prompt(spider_root).endswith(f"-- Question: {train[0].question}\n-- SQL:")


def test_missing_folder_file_or_database_explains_the_fix(spider_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="write_spider_fixture") as err:
        load_spider(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_spider(spider_root, "missing.json")

    broken = tmp_path / "broken"
    shutil.copytree(spider_root, broken)
    shutil.rmtree(broken / "database" / "shop")
    with pytest.raises(FileNotFoundError) as err:
        load_spider(broken, "dev.json", cache_dir=tmp_path / "cache")
    assert str(broken / "database" / "shop" / "shop.sqlite") in str(err.value)


def test_records_without_spider_fields_are_rejected(tmp_path):
    (tmp_path / "dev.json").write_text(json.dumps([{"text": "hi", "sql": "SELECT 1"}]))
    with pytest.raises(ValueError, match="db_id"):
        load_spider(tmp_path, cache_dir=tmp_path / "cache")
