"""Where a component's or pipeline's default deliberately differs from its recipe's config.

Every other default of a training component and of a pipeline parameter equals the field of the
recipe config it feeds (``kubetune.recipes``: SFTConfig, PPOConfig, DPOConfig, one source per
recipe); tests/pipelines/test_defaults.py checks both, and this table is the only way out.
"""

from __future__ import annotations

# (component or pipeline, parameter) -> (its default, why it differs from the recipe's)
DELIBERATE_DIFFERENCES: dict[tuple[str, str], tuple[object, str]] = {
    ("kubetune-autoresearch", "ppo_steps"): (
        60, "a sweep trains 4-5 PPO runs on one server; 60 steps each keep `make demo` near 12 min "
            "on 2 cores (PPOConfig.steps, 150, is one run's budget)"),
}
