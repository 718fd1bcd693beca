"""Documents for pretraining a tiny base model so that it knows the SQL "language" of the task.

Only train material goes in: the CREATE TABLE text of the three train databases, the train
split's SQL, and the train split's questions. RL and held-out wordings, held-out values and the
held-out database never appear (a test checks), so every evaluation stays out of distribution.
Questions and SQL live in separate documents: the mapping question -> SQL is exactly what
supervised fine-tuning must teach, so pretraining must not already contain it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from .databases import SPECS, TRAIN_DB_IDS
from .generator import generate_split, resolve_sizes

LINES_PER_DOCUMENT = 8  # short documents: the tiny model's context is ~200 tokens


def schema_text(db_id: str) -> str:
    """The schema of a database exactly as ``schema_sql`` reads it back from the SQLite file."""
    return "\n".join(ddl + ";" for ddl in SPECS[db_id].ddl())


def _chunks(lines: list[str], size: int) -> list[list[str]]:
    return [lines[i:i + size] for i in range(0, len(lines), size)]


def pretraining_corpus(seed: int = 0, sizes: Mapping[str, int] | None = None) -> list[str]:
    """Pretraining documents built from the train split only.

    Documents: each train schema alone; per train database, its schema followed by a few of its
    train-split SQL statements; and groups of train-split questions (no SQL). Shuffled with a
    seeded RNG, so the same seed gives the same list.

    Args:
        seed: must equal the dataset seed so the corpus matches the generated train split.
        sizes: split sizes as given to ``build_dataset`` (only ``train`` matters).
    """
    train = generate_split("train", resolve_sizes(sizes)["train"], seed)
    docs = [schema_text(db_id) for db_id in TRAIN_DB_IDS]
    for db_id in TRAIN_DB_IDS:
        queries = [ex.query for ex in train if ex.db_id == db_id]
        docs += [schema_text(db_id) + "\n" + "\n".join(chunk)
                 for chunk in _chunks(queries, LINES_PER_DOCUMENT)]
    questions = [ex.question for ex in train]
    docs += ["\n".join(chunk) for chunk in _chunks(questions, LINES_PER_DOCUMENT)]
    random.Random(f"{seed}:corpus").shuffle(docs)
    return docs
