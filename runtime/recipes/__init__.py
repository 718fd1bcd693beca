"""Recipes: plain training loops that drive a model only through the official ``tinker`` SDK.

Each takes its config (one dataclass, the one place its defaults live) with the ``base_url`` of a
training server; whoever starts a server for a recipe does it outside the recipe.
"""

from .common import RunSettings
from .dpo import DPOConfig, run_dpo
from .ppo import PPOConfig, run_ppo
from .sft import SFTConfig, run_sft

# name -> (config class, run function): what `kubetune train NAME` and the training steps run.
RECIPES = {"sft": (SFTConfig, run_sft), "ppo": (PPOConfig, run_ppo), "dpo": (DPOConfig, run_dpo)}

__all__ = ["RECIPES", "DPOConfig", "PPOConfig", "RunSettings", "SFTConfig", "run_dpo", "run_ppo", "run_sft"]
