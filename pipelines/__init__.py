"""Pipelines (``kubetune.pipelines``): compositions of :mod:`kubetune.components`."""

from .dpo_finetune import dpo_finetune
from .rl_finetune import rl_finetune

PIPELINES = {"rl_finetune": rl_finetune, "dpo_finetune": dpo_finetune}

__all__ = ["PIPELINES", "dpo_finetune", "rl_finetune"]
