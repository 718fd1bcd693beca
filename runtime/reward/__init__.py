"""Rewards: the interface a task's rewards implement and the registry recipes score through.

The reward server (scoring over HTTP, on its own resources) is built on this registry.
"""

from .registry import GroupScorer, RewardTask, register, reward_task
from .text2sql import TEXT2SQL, score_text2sql_group

__all__ = ["TEXT2SQL", "GroupScorer", "RewardTask", "register", "reward_task", "score_text2sql_group"]
