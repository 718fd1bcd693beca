"""Losses as pure functions of per-token log-probabilities, and the registry the engine looks them up in.

``policy.py``: Tinker's built-in per-datum losses (cross-entropy and the policy-gradient family);
``dpo.py``: the one DPO objective, used by the engine's pairwise ``dpo`` loss and by the DPO
recipe's client-side loss alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .dpo import dpo_loss, dpo_pairs
from .policy import (
    DEFAULT_CLIP_HIGH,
    DEFAULT_CLIP_LOW,
    LossOutput,
    cispo,
    clip_bounds,
    cross_entropy,
    dro,
    importance_sampling,
    ppo,
    stable_reinforce,
)

__all__ = ["DEFAULT_CLIP_HIGH", "DEFAULT_CLIP_LOW", "LOSSES", "LossOutput", "LossSpec", "dpo_loss",
           "get_loss"]


@dataclass(frozen=True)
class LossSpec:
    """A loss function, the ``loss_fn_inputs`` it needs and the config keys it understands."""

    fn: Callable[..., Any]  # per datum: (logp, inputs, config) -> LossOutput; pairwise: see dpo_pairs
    inputs: tuple[str, ...]
    config_keys: tuple[str, ...] = ()
    pairwise: bool = False  # fn sees all rows at once (dpo_pairs) instead of one datum

    def check_config(self, name: str, config: Mapping[str, float]) -> None:
        """Rejects unknown keys and impossible values before any compute runs."""
        unknown = sorted(set(config) - set(self.config_keys))
        if unknown:
            raise UserError(f"loss_fn_config keys {unknown} mean nothing to {name!r}; "
                            f"it takes {list(self.config_keys)}")
        if "clip_low_threshold" in self.config_keys:
            clip_bounds(config)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in config.values()):
            raise UserError(f"loss_fn_config values must be finite numbers; got {dict(config)}")
        if "ratio_cap" in self.config_keys and (config.get("ratio_cap", 1.0) <= 0
                                                or config.get("kl_coeff", 0.0) < 0):
            raise UserError(f"{name!r} needs ratio_cap > 0 and kl_coeff >= 0; got {dict(config)}")


_RL_INPUTS = ("target_tokens", "logprobs", "advantages")
_CLIP_KEYS = ("clip_low_threshold", "clip_high_threshold")

LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(cross_entropy, ("target_tokens", "weights")),
    "importance_sampling": LossSpec(importance_sampling, _RL_INPUTS),
    "ppo": LossSpec(ppo, _RL_INPUTS, _CLIP_KEYS),
    "cispo": LossSpec(cispo, _RL_INPUTS, _CLIP_KEYS),
    "dro": LossSpec(dro, _RL_INPUTS, ("beta",)),
    "stable_reinforce": LossSpec(stable_reinforce,
                                 ("target_tokens", "advantages", "sampler_logprobs", "sampled_mask"),
                                 ("kl_coeff", "ratio_cap")),
    "dpo": LossSpec(dpo_pairs, ("target_tokens", "weights", "ref_logprobs"), ("beta", "scale", "nll_weight"),
                    pairwise=True),
}


def get_loss(name: str) -> LossSpec:
    """Looks a loss up by its Tinker name, with a clear error for unknown names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UserError(f"unknown loss_fn {name!r}; this server supports {sorted(LOSSES)}") from None
