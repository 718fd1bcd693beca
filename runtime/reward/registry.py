"""The reward-function interface and the registry recipes look rewards up in.

A task's rewards are pure functions (``tasks/<task>/rewards.py``); what a recipe needs from them is
one call per prompt: score that prompt's group of completions under a named variant. A task makes
itself available by registering a :class:`RewardTask` here; the text-to-SQL task is the first entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks.text2sql import Reward

# (dataset directory, the prompt's example, its completions, reward variant, a pool to score in) -> rewards
GroupScorer = Callable[[Path, Any, Sequence[str], str, Executor], list[Reward]]


@dataclass(frozen=True)
class RewardTask:
    """One task's rewards: the variants it offers and how it scores one prompt's group."""

    name: str
    variants: tuple[str, ...]
    score_group: GroupScorer

    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise ValueError(f"reward must be one of {', '.join(self.variants)} for the {self.name} task; "
                             f"got {variant!r}")


_TASKS: dict[str, RewardTask] = {}


def register(task: RewardTask) -> RewardTask:
    """Adds (or replaces) a task's rewards under ``task.name``."""
    _TASKS[task.name] = task
    return task


def reward_task(name: str) -> RewardTask:
    """The registered task ``name``, with a clear error for an unknown one."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"no rewards registered for task {name!r}; "
                         f"registered: {', '.join(sorted(_TASKS))}") from None
