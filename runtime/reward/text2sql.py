"""The text-to-SQL task's rewards in the registry: sandboxed execution against the gold query."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from functools import partial
from pathlib import Path

from ..tasks.text2sql import REWARD_VARIANTS, Example, Reward, db_path, execute_sql, text2sql_reward
from .registry import RewardTask, register


def score_text2sql_group(data_dir: Path, example: Example, completions: Sequence[str], variant: str,
                         pool: Executor) -> list[Reward]:
    """Sandboxed rewards of one prompt's completions; the gold query runs once for the group."""
    database = db_path(data_dir, example.db_id)
    gold = execute_sql(database, example.query)
    reward = partial(text2sql_reward, database, gold_sql=example.query, variant=variant, gold=gold)
    return list(pool.map(reward, completions))


TEXT2SQL = register(RewardTask("text2sql", REWARD_VARIANTS, score_text2sql_group))
