"""Pipelines (``kubetune.pipelines``): compositions of :mod:`kubetune.components`."""

from .cluster import ClusterSettings
from .dpo_finetune import build_dpo_finetune, dpo_finetune
from .rl_finetune import build_rl_finetune, rl_finetune

PIPELINES = {"rl_finetune": rl_finetune, "dpo_finetune": dpo_finetune}


def build_pipelines(settings: ClusterSettings) -> dict:
    """Every pipeline, with ``settings`` (e.g. ``ClusterSettings(gpu=False)`` for a CPU-only cluster)."""
    return {"rl_finetune": build_rl_finetune(settings), "dpo_finetune": build_dpo_finetune(settings)}


__all__ = ["PIPELINES", "ClusterSettings", "build_pipelines", "dpo_finetune", "rl_finetune"]
