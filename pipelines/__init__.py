"""Pipelines (``kubetune.pipelines``): compositions of :mod:`kubetune.components`."""

from .autoresearch import DEFAULT_EXPERIMENTS, autoresearch, build_autoresearch
from .cluster import ClusterSettings
from .dpo_finetune import build_dpo_finetune, dpo_finetune
from .rl_finetune import build_rl_finetune, rl_finetune

PIPELINES = {"rl_finetune": rl_finetune, "dpo_finetune": dpo_finetune, "autoresearch": autoresearch}


def build_pipelines(settings: ClusterSettings) -> dict:
    """Every pipeline, with ``settings`` (e.g. ``ClusterSettings(gpu=False)`` for a CPU-only cluster)."""
    return {"rl_finetune": build_rl_finetune(settings), "dpo_finetune": build_dpo_finetune(settings),
            "autoresearch": build_autoresearch(settings)}


__all__ = ["DEFAULT_EXPERIMENTS", "PIPELINES", "ClusterSettings", "autoresearch", "build_pipelines",
           "dpo_finetune", "rl_finetune"]
