"""Recipes: plain training loops that drive a model only through the official ``tinker`` SDK."""

from .sft import SFTConfig, run_sft

__all__ = ["SFTConfig", "run_sft"]
