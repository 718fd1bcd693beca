"""Embedded text-to-SQL task: generated SQLite databases, five disjoint splits, sandboxed execution
and execution accuracy. See docs/text2sql.md and docs/execution-accuracy.md."""

from .corpus import pretraining_corpus
from .dataset import HELDOUT_SPLITS, SPLITS, Example, db_path, format_prompt, load_split, schema_sql
from .evaluate import SqlGenerator, evaluate_examples
from .execution_accuracy import execution_accuracy, execution_match
from .generator import DEFAULT_SIZES, DatasetInfo, build_dataset, task_statistics
from .rewards import REWARD_VARIANTS, Reward, extract_sql, text2sql_reward
from .sandbox import ExecResult, execute_sql
from .spider import load_spider, write_spider_fixture

__all__ = [
    "DEFAULT_SIZES",
    "HELDOUT_SPLITS",
    "SPLITS",
    "SqlGenerator",
    "DatasetInfo",
    "REWARD_VARIANTS",
    "Reward",
    "Example",
    "ExecResult",
    "build_dataset",
    "db_path",
    "evaluate_examples",
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
