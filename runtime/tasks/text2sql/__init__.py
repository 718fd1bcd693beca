"""Embedded text-to-SQL task: generated SQLite databases, five disjoint splits, sandboxed execution
and execution accuracy. See docs/text2sql.md and docs/execution-accuracy.md."""

from .corpus import pretraining_corpus
from .dataset import SPLITS, Example, db_path, format_prompt, load_split, schema_sql
from .execution_accuracy import execution_accuracy, execution_match
from .generator import DEFAULT_SIZES, DatasetInfo, build_dataset, task_statistics
from .rewards import REWARD_VARIANTS, Reward, extract_sql, text2sql_reward
from .sandbox import ExecResult, execute_sql
from .spider import load_spider, write_spider_fixture

__all__ = [
    "DEFAULT_SIZES",
    "SPLITS",
    "DatasetInfo",
    "REWARD_VARIANTS",
    "Reward",
    "Example",
    "ExecResult",
    "build_dataset",
    "db_path",
    "execute_sql",
    "execution_accuracy",
    "execution_match",
    "extract_sql",
    "format_prompt",
    "load_spider",
    "load_split",
    "pretraining_corpus",
    "schema_sql",
    "task_statistics",
    "text2sql_reward",
    "write_spider_fixture",
]
