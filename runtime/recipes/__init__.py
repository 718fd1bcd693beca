"""Recipes: plain training loops that drive a model only through the official ``tinker`` SDK."""

from .dpo import DPOConfig, run_dpo
from .ppo import PPOConfig, run_ppo
from .sft import SFTConfig, run_sft

__all__ = ["DPOConfig", "PPOConfig", "SFTConfig", "run_dpo", "run_ppo", "run_sft"]
