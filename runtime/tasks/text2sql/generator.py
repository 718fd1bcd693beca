"""Deterministic generation of the five splits and writing them in Spider layout.

Disjointness is by construction (and checked by tests):

=====================  ===========  ==================  ===================  ==================
split                  databases    wordings            slot values          used for
=====================  ===========  ==================  ===================  ==================
train                  3 train DBs  train (0-2)         train values         SFT, pretraining
rl                     3 train DBs  rl (3-4)            train values         RL prompts
heldout_values         3 train DBs  train (0-2)         held-out values      eval
heldout_paraphrase     3 train DBs  paraphrase (5)      held-out values      eval
heldout_database       shop         all                 all                  eval
=====================  ===========  ==================  ===================  ==================
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .databases import (
    HELDOUT_DB_IDS,
    SPECS,
    TRAIN_DB_IDS,
    DatabaseSpec,
    memory_database,
    partition_pool,
    slot_pools,
    write_database,
)
from .dataset import SPLITS, Example, db_path, load_split
from .templates import TEMPLATES, WORDING_GROUPS, WORDINGS_PER_TEMPLATE, Template, render, slot_kind

DEFAULT_SIZES: dict[str, int] = {
    "train": 800,
    "rl": 300,
    "heldout_values": 150,
    "heldout_paraphrase": 150,
    "heldout_database": 150,
}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SplitPlan:
    """Which databases, wordings and slot values a split draws from."""

    db_ids: tuple[str, ...]
    wording_ids: tuple[int, ...]
    values: str  # "train", "heldout" or "all" (see databases.partition_pool)
    needs_slots: bool  # slot-less templates would just repeat train questions


SPLIT_PLANS: dict[str, SplitPlan] = {
    "train": SplitPlan(TRAIN_DB_IDS, WORDING_GROUPS["train"], "train", False),
    "rl": SplitPlan(TRAIN_DB_IDS, WORDING_GROUPS["rl"], "train", False),
    "heldout_values": SplitPlan(TRAIN_DB_IDS, WORDING_GROUPS["train"], "heldout", True),
    "heldout_paraphrase": SplitPlan(TRAIN_DB_IDS, WORDING_GROUPS["heldout_paraphrase"], "heldout", False),
    "heldout_database": SplitPlan(HELDOUT_DB_IDS, tuple(range(WORDINGS_PER_TEMPLATE)), "all", False),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What ``build_dataset`` wrote."""

    data_dir: Path
    seed: int
    counts: dict[str, int]
    content_hash: str
    train_db_ids: tuple[str, ...] = TRAIN_DB_IDS
    heldout_db_ids: tuple[str, ...] = HELDOUT_DB_IDS
    files: tuple[str, ...] = field(default=())


def _informative(rows: list[tuple]) -> bool:
    """A gold result worth asking for: not empty, and not a lone NULL or zero.

    An empty (or 0 / NULL aggregate) answer is what a wrong WHERE also returns, so such gold
    queries would reward chance; the generator never emits them.
    """
    if not rows:
        return False
    return not (len(rows) == 1 and all(v is None or v == 0 for v in rows[0]))


class _GoldChecker:
    """Runs candidate gold SQL on in-memory copies of the databases, caching by (db, SQL)."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._conns: dict[str, sqlite3.Connection] = {}
        self._cache: dict[tuple[str, str], bool] = {}

    def ok(self, db_id: str, sql: str) -> bool:
        key = (db_id, sql)
        if key not in self._cache:
            if db_id not in self._conns:
                self._conns[db_id] = memory_database(SPECS[db_id], self._seed)
            self._cache[key] = _informative(self._conns[db_id].execute(sql).fetchall())
        return self._cache[key]

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


def _assignments(template: Template, pools: dict[str, tuple]) -> list[dict[str, str | int]]:
    """Every combination of slot values for a template (two ``cat`` slots must differ)."""
    slots = template.slots
    combos = itertools.product(*(pools[slot_kind(s)] for s in slots))
    out = []
    for combo in combos:
        values = dict(zip(slots, combo, strict=True))
        if "cat2" in values and values["cat2"] == values["cat"]:
            continue
        out.append(values)
    return out


def _candidates(template: Template, plan: SplitPlan, seed: int) -> list[tuple[str, int, dict]]:
    """All (db_id, wording_id, values) a split may draw for one template."""
    out = []
    for db_id in plan.db_ids:
        spec: DatabaseSpec = SPECS[db_id]
        pools = {kind: partition_pool(pool, plan.values) for kind, pool in slot_pools(spec, seed).items()}
        for values in _assignments(template, pools):
            for wording_id in plan.wording_ids:
                out.append((db_id, wording_id, values))
    return out


def generate_split(split: str, size: int, seed: int, checker: _GoldChecker | None = None) -> list[Example]:
    """Draw ``size`` distinct examples for one split, balanced across templates.

    Templates take turns (round robin); each draws from its own shuffled candidate list and skips
    candidates whose gold result is uninformative. A template whose candidates run out drops out,
    so a split can come out smaller than ``size`` if the request exceeds what the plan allows.
    """
    plan = SPLIT_PLANS[split]
    own_checker = checker is None
    checker = checker or _GoldChecker(seed)
    rng = random.Random(f"{seed}:{split}:sample")
    templates = [t for t in TEMPLATES if t.slots or not plan.needs_slots]
    queues = {}
    for template in templates:
        candidates = _candidates(template, plan, seed)
        rng.shuffle(candidates)
        queues[template.id] = candidates

    picked: list[Example] = []
    seen: set[tuple[str, str]] = set()
    while len(picked) < size and any(queues.values()):
        for template in templates:
            queue = queues[template.id]
            while queue and len(picked) < size:
                db_id, wording_id, values = queue.pop()
                spec = SPECS[db_id]
                question, sql = render(template, wording_id, spec.words, spec.identifiers(), values)
                if (db_id, question) in seen or not checker.ok(db_id, sql):
                    continue
                seen.add((db_id, question))
                slots = tuple(sorted((k, str(v)) for k, v in values.items()))
                picked.append(Example("", db_id, question, sql, split, template.id, wording_id, slots))
                break
    if own_checker:
        checker.close()
    rng.shuffle(picked)  # mix templates and databases for SGD
    return [_with_id(ex, f"{split}-{i:05d}") for i, ex in enumerate(picked)]


def _with_id(example: Example, example_id: str) -> Example:
    return Example(example_id, example.db_id, example.question, example.query, example.split,
                   example.template_id, example.wording_id, example.slots)


def resolve_sizes(sizes: Mapping[str, int] | None) -> dict[str, int]:
    """Defaults overridden by ``sizes``; unknown split names are an error, not silently ignored."""
    resolved = dict(DEFAULT_SIZES)
    for split, n in (sizes or {}).items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} in sizes; expected one of {', '.join(SPLITS)}")
        if n < 0:
            raise ValueError(f"size of split {split!r} must be >= 0, got {n}")
        resolved[split] = int(n)
    return resolved


def generate_splits(seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict[str, list[Example]]:
    """All five splits in memory (no files). Each split depends only on (seed, its own size)."""
    resolved = resolve_sizes(sizes)
    checker = _GoldChecker(seed)
    try:
        return {split: generate_split(split, resolved[split], seed, checker) for split in SPLITS}
    finally:
        checker.close()


def spider_tables(spec: DatabaseSpec) -> dict:
    """The Spider ``tables.json`` entry of one database."""
    tables = [
        (spec.group_table, [("id", "number"), ("name", "text"), (spec.gcat_col, "text"),
                            (spec.gnum_col, "number")]),
        (spec.entity_table, [("id", "number"), (spec.name_col, "text"), (spec.cat_col, "text"),
                             (spec.num_col, "number"), (spec.fk_col, "number")]),
    ]
    columns: list[list] = [[-1, "*"]]
    types = ["text"]
    for t_index, (_, cols) in enumerate(tables):
        for name, col_type in cols:
            columns.append([t_index, name])
            types.append(col_type)
    group_id = columns.index([0, "id"])
    return {
        "db_id": spec.db_id,
        "table_names_original": [name for name, _ in tables],
        "table_names": [name.replace("_", " ") for name, _ in tables],
        "column_names_original": columns,
        "column_names": [[t, c.replace("_", " ")] for t, c in columns],
        "column_types": types,
        "primary_keys": [group_id, columns.index([1, "id"])],
        "foreign_keys": [[columns.index([1, spec.fk_col]), group_id]],
    }


def _content_hash(out_dir: Path, db_ids: tuple[str, ...]) -> str:
    """sha256 over the split files, tables.json and a SQL dump of each database.

    The dump (not the .sqlite bytes) keeps the hash stable across SQLite versions.
    """
    digest = hashlib.sha256()
    for name in [f"{s}.jsonl" for s in SPLITS] + ["tables.json"]:
        digest.update(name.encode())
        digest.update((out_dir / name).read_bytes())
    for db_id in db_ids:
        conn = sqlite3.connect(db_path(out_dir, db_id).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            digest.update("\n".join(conn.iterdump()).encode())
        finally:
            conn.close()
    return digest.hexdigest()


def build_dataset(out_dir: str | Path, seed: int = 0, sizes: Mapping[str, int] | None = None) -> DatasetInfo:
    """Generate the task and write it in Spider layout.

    Writes ``<split>.jsonl`` for the five splits, ``database/<db_id>/<db_id>.sqlite`` for all four
    databases, ``tables.json`` (Spider schema format) and ``manifest.json`` (counts, hash).
    Same seed and sizes give byte-identical files.

    Args:
        out_dir: directory to write (created if missing; existing task files are overwritten).
        seed: drives row values and example sampling.
        sizes: per-split example counts overriding ``DEFAULT_SIZES``.

    Returns:
        DatasetInfo with the actual counts and the content hash.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_sizes(sizes)
    db_ids = TRAIN_DB_IDS + HELDOUT_DB_IDS
    for db_id in db_ids:
        write_database(SPECS[db_id], seed, db_path(out, db_id))
    tables = [spider_tables(SPECS[db_id]) for db_id in db_ids]
    (out / "tables.json").write_text(json.dumps(tables, indent=1) + "\n", encoding="utf-8")

    splits = generate_splits(seed, resolved)
    for split, examples in splits.items():
        lines = "".join(ex.to_json() + "\n" for ex in examples)
        (out / f"{split}.jsonl").write_text(lines, encoding="utf-8")

    counts = {split: len(examples) for split, examples in splits.items()}
    content_hash = _content_hash(out, db_ids)
    files = tuple([f"{s}.jsonl" for s in SPLITS] + ["tables.json", "manifest.json"]
                  + [str(db_path(out, d).relative_to(out)) for d in db_ids])
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "requested_sizes": resolved,
        "counts": counts,
        "databases": {"train": list(TRAIN_DB_IDS), "heldout": list(HELDOUT_DB_IDS)},
        "templates": len(TEMPLATES),
        "wordings_per_template": WORDINGS_PER_TEMPLATE,
        "wording_groups": {k: list(v) for k, v in WORDING_GROUPS.items()},
        "content_hash": content_hash,
        "files": list(files),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return DatasetInfo(out, seed, counts, content_hash, files=files)


def task_statistics(data: str | Path | DatasetInfo) -> dict:
    """Counts a demo can print: examples, databases, templates and wordings per split.

    Args:
        data: a dataset directory written by ``build_dataset`` or its ``DatasetInfo``.
    """
    data_dir = data.data_dir if isinstance(data, DatasetInfo) else Path(data)
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    per_split = {}
    for split in SPLITS:
        examples = load_split(data_dir, split)
        per_split[split] = {
            "examples": len(examples),
            "databases": sorted({ex.db_id for ex in examples}),
            "templates": len({ex.template_id for ex in examples}),
            "wordings": len({(ex.template_id, ex.wording_id) for ex in examples}),
        }
    return {
        "seed": manifest["seed"],
        "content_hash": manifest["content_hash"],
        "templates": manifest["templates"],
        "wordings": manifest["templates"] * manifest["wordings_per_template"],
        "wordings_per_group": {k: len(v) for k, v in manifest["wording_groups"].items()},
        "databases": manifest["databases"],
        "splits": per_split,
    }
