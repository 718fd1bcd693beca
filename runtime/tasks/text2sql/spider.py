"""Read a Spider-format dataset from local disk, and write a small Spider-format fixture.

Spider layout::

    <root>/dev.json                            # [{"db_id", "question", "query", ...}, ...]
    <root>/tables.json                         # schema descriptions (not needed here)
    <root>/database/<db_id>/<db_id>.sqlite

Nothing is downloaded: the JSON goes through HF ``datasets``' local ``json`` builder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .dataset import SPLITS, Example, db_path, load_split
from .generator import build_dataset

_FIX_HINT = ("Point `root` at an unpacked Spider-format folder (e.g. the official spider.zip), or create "
             "a small one with kubetune.tasks.text2sql.spider.write_spider_fixture(root).")


def load_spider(root: str | Path, split_file: str = "dev.json",
                cache_dir: str | Path | None = None) -> list[Example]:
    """Load a Spider-format split as ``Example``s (``split`` = file stem, ``template_id`` = "spider").

    Args:
        root: folder with ``split_file`` and ``database/<db_id>/<db_id>.sqlite``.
        split_file: the JSON list to read (``dev.json``, ``train_spider.json``...).
        cache_dir: where ``datasets`` keeps its Arrow cache (default: its usual cache).

    Raises:
        FileNotFoundError: the folder, the JSON file or a referenced database is missing; the
            message names the expected path and how to fix it.
        ValueError: a record lacks ``question``, ``query`` or ``db_id``.
    """
    import datasets  # heavy import, only needed here

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Spider folder not found: {root}. {_FIX_HINT}")
    json_path = root / split_file
    if not json_path.is_file():
        raise FileNotFoundError(f"Spider split file not found: {json_path}. {_FIX_HINT}")

    table = datasets.load_dataset(
        "json", data_files=str(json_path), split="train",
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    missing_fields = {"question", "query", "db_id"} - set(table.column_names)
    if missing_fields:
        raise ValueError(f"{json_path} lacks field(s) {sorted(missing_fields)}; is it a Spider-format file?")

    split = Path(split_file).stem
    examples = []
    checked: set[str] = set()
    for i, (question, query, db_id) in enumerate(zip(table["question"], table["query"], table["db_id"],
                                                     strict=True)):
        if db_id not in checked:
            path = db_path(root, db_id)
            if not path.is_file():
                raise FileNotFoundError(
                    f"database {db_id!r} (record {i} of {json_path.name}) not found at {path}; Spider "
                    f"expects <root>/database/<db_id>/<db_id>.sqlite. {_FIX_HINT}"
                )
            checked.add(db_id)
        examples.append(Example(id=f"{split}-{i:05d}", db_id=db_id, question=question.strip(),
                                query=query.strip(), split=split, template_id="spider", wording_id=-1))
    return examples


def _spider_record(example: Example) -> dict:
    """A Spider-style record, including the tokenised and nested fields real files carry."""
    return {
        "db_id": example.db_id,
        "question": example.question,
        "question_toks": re.findall(r"\w+|[^\w\s]", example.question),
        "query": example.query,
        "query_toks": re.findall(r"'[^']*'|\w+|[^\w\s]", example.query),
        # Spider's parsed SQL mixes ints, bools, nulls and nested lists; keep a small sample of that.
        "sql": {"limit": None, "intersect": None, "select": [False, [[0, [0, [0, 0, False], None]]]]},
    }


def write_spider_fixture(out_dir: str | Path, seed: int = 0, per_split: int = 10) -> Path:
    """Write a small Spider-layout folder from the generated task (a stand-in for real Spider).

    ``dev.json`` holds ``per_split`` examples of each held-out split, ``train_spider.json`` the
    first ``per_split`` train examples; ``database/`` and ``tables.json`` come from ``build_dataset``.

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    sizes = {split: per_split for split in SPLITS}
    build_dataset(out, seed=seed, sizes=sizes)
    dev = [ex for split in SPLITS if split.startswith("heldout") for ex in load_split(out, split)]
    train = load_split(out, "train")
    for name, examples in (("dev.json", dev), ("train_spider.json", train)):
        records = [_spider_record(ex) for ex in examples]
        (out / name).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return out
