"""The dataset step: the embedded text-to-SQL task, or a copy of a Spider-format directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..tasks.text2sql import build_dataset, load_spider, task_statistics


def prepare_data(out_dir: str | Path, source: str = "embedded", seed: int = 0,
                 sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """The embedded text-to-SQL task (``source="embedded"``) or a copy of a Spider-format directory.

    Returns the task statistics (examples per split, databases, templates).
    """
    out_dir = Path(out_dir)
    if source == "embedded":
        build_dataset(out_dir, seed=seed, sizes=sizes)
        return task_statistics(out_dir)
    source_dir = Path(source)
    if not source_dir.is_dir():
        raise ValueError(f"data source {source!r} is neither 'embedded' nor a Spider-format directory")
    load_spider(source_dir)  # validates the layout before anything is copied
    shutil.copytree(source_dir, out_dir, dirs_exist_ok=True)
    return {"source": str(source_dir)}
