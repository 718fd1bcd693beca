"""Tinker's built-in losses as pure functions of per-token log-probabilities.

Every function takes the log-probabilities the current model assigns to one datum's target tokens
(``target_logprobs``, shape ``(N,)``, differentiable) and that datum's ``loss_fn_inputs`` as float
tensors of the same shape, and returns the datum's summed loss and its per-token loss. Batches sum
the per-datum losses (``loss:sum``), exactly as Tinker does: no normalisation by token count happens
here, so a client that wants a mean divides its weights or advantages itself.

Formulas (``r = exp(target_logprobs - sampling_logprobs)``, ``A`` the advantages):

- ``cross_entropy``:       ``-sum(weights * target_logprobs)`` (signed weights allowed).
- ``importance_sampling``: ``-sum(r * A)``.
- ``ppo``:                 ``-sum(min(r * A, clip(r, lo, hi) * A))``, ``lo``/``hi`` ratio bounds
                           (``clip_low_threshold``, ``clip_high_threshold``; default 0.8 / 1.2).
- ``cispo``:               ``-sum(sg(clip(r, lo, hi)) * target_logprobs * A)``.
- ``dro``:                 ``-sum(target_logprobs * A - beta / 2 * (target_logprobs - sampling_logprobs)^2)``.
- ``stable_reinforce``:    ``-sum(m * (sg(min(r_s, cap)) * target_logprobs * A - kl_coeff / 2 * (target_logprobs - q)^2))``
                           with ``q = sampler_logprobs`` the log-probabilities the *server* recorded when it
                           sampled the tokens, ``r_s = exp(target_logprobs - q)`` and ``m = sampled_mask``
                           (1 on sampled tokens, 0 on prompt tokens). ``cap`` (``ratio_cap``, default 2) truncates
                           the importance weight, so a token the sampler drew far more rarely than the trainer now
                           would cannot blow the step up (off-policy async RL, different numerics);
                           ``kl_coeff`` (default 0) keeps the policy near the sampler. The service fills
                           ``sampler_logprobs`` and ``sampled_mask`` from the datum's provenance spans
                           (``runtime/api/stability.py``); Tinker defines its own objective for this name,
                           so numbers are not comparable with its hosted loss.

One kubetune extension, not in Tinker's hosted service: ``dpo``, a *pairwise* loss over datums laid
out (chosen, rejected, chosen, rejected, …). With ``s = sum(weights * logp)`` and
``s_ref = sum(weights * ref_logprobs)`` per datum and ``m = beta * ((s_c - s_ref_c) - (s_r - s_ref_r))``
per pair, the loss is ``scale * sum(-log sigmoid(m) + nll_weight * nll_c)`` with ``nll_c`` the chosen
answer's mean negative log-likelihood (RPO's anchor; 0 by default); one forward and backward, where the SDK's
``forward_backward_custom`` needs a forward pass more. Metrics ``dpo/correct:sum`` (pairs with
m > 0) and ``dpo/margin:sum``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import UserError

Tensor = torch.Tensor
LossOutput = tuple[Tensor, Tensor]  # (loss summed over the datum, per-token loss (N,))

DEFAULT_CLIP_LOW = 0.8
DEFAULT_CLIP_HIGH = 1.2
DEFAULT_DRO_BETA = 0.05
DEFAULT_DPO_BETA = 0.1
DEFAULT_STABLE_RATIO_CAP = 2.0
DEFAULT_STABLE_KL_COEFF = 0.0


def cross_entropy(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Weighted negative log-likelihood: ``-sum(weights * logp)``; weights may be negative (DPO)."""
    per_token = -inputs["weights"] * target_logprobs
    return per_token.sum(), per_token


def importance_sampling(
    target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]
) -> LossOutput:
    """REINFORCE corrected for the sampler: ``-sum(exp(logp - logq) * A)``."""
    ratio = torch.exp(target_logprobs - inputs["logprobs"])
    per_token = -ratio * inputs["advantages"]
    return per_token.sum(), per_token


def ppo(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Token-wise clipped surrogate: ``-sum(min(r * A, clip(r, lo, hi) * A))``."""
    low, high = _clip_bounds(config)
    advantages = inputs["advantages"]
    ratio = torch.exp(target_logprobs - inputs["logprobs"])
    clipped = torch.clamp(ratio, low, high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    return per_token.sum(), per_token


def cispo(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Clipped ratio as a constant coefficient of the policy gradient: ``-sum(sg(clip(r)) * logp * A)``."""
    low, high = _clip_bounds(config)
    ratio = torch.exp(target_logprobs - inputs["logprobs"])
    coefficient = torch.clamp(ratio, low, high).detach()
    per_token = -coefficient * target_logprobs * inputs["advantages"]
    return per_token.sum(), per_token


def dro(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Policy gradient with a quadratic penalty on the log-ratio: ``-sum(logp * A - beta/2 * (logp - logq)^2)``."""
    beta = float(config.get("beta", DEFAULT_DRO_BETA))
    log_ratio = target_logprobs - inputs["logprobs"]
    per_token = -(target_logprobs * inputs["advantages"] - 0.5 * beta * log_ratio**2)
    return per_token.sum(), per_token


def stable_reinforce(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Truncated-importance-weighted REINFORCE against the server's own sampling record."""
    cap = float(config.get("ratio_cap", DEFAULT_STABLE_RATIO_CAP))
    kl_coeff = float(config.get("kl_coeff", DEFAULT_STABLE_KL_COEFF))
    sampled = inputs["sampled_mask"]
    log_ratio = target_logprobs - inputs["sampler_logprobs"]
    weight = torch.exp(log_ratio.detach()).clamp(max=cap)
    per_token = -sampled * (weight * target_logprobs * inputs["advantages"] - 0.5 * kl_coeff * log_ratio**2)
    return per_token.sum(), per_token


def dpo_pairs(target_logprobs: list[Tensor], inputs: list[Mapping[str, Tensor]],
              config: Mapping[str, float]) -> tuple[Tensor, list[Tensor], dict[str, float]]:
    """The pairwise ``dpo`` loss over rows (chosen, rejected, …): (total, per-token loss per row, metrics).

    Each pair's loss is spread over its weighted tokens in ``elementwise_loss`` (so the per-token
    outputs of a pair sum to its loss)."""
    if not target_logprobs or len(target_logprobs) % 2:
        raise UserError(f"the dpo loss takes datums in (chosen, rejected) pairs; this request has "
                        f"{len(target_logprobs)} datums (an odd count: a pair was split or is incomplete)")
    beta = float(config.get("beta", DEFAULT_DPO_BETA))
    scale = float(config.get("scale", 1.0))
    nll_weight = float(config.get("nll_weight", 0.0))
    summed = [((lp - x["ref_logprobs"]) * x["weights"]).sum() for lp, x in zip(target_logprobs, inputs, strict=True)]
    total = torch.zeros((), device=target_logprobs[0].device)
    per_token: list[Tensor] = []
    correct = margin_sum = 0.0
    for c in range(0, len(summed), 2):
        margin = beta * (summed[c] - summed[c + 1])
        pair_loss = -torch.nn.functional.logsigmoid(margin)
        if nll_weight:
            weights = inputs[c]["weights"]
            pair_loss = pair_loss - nll_weight * (target_logprobs[c] * weights).sum() / weights.sum().clamp(min=1.0)
        pair_loss = pair_loss * scale
        total = total + pair_loss
        correct += float(margin.detach() > 0)
        margin_sum += float(margin.detach())
        n_weighted = float((inputs[c]["weights"] != 0).sum() + (inputs[c + 1]["weights"] != 0).sum()) or 1.0
        for row in (c, c + 1):
            per_token.append((inputs[row]["weights"] != 0).float() * pair_loss.detach() / n_weighted)
    return total, per_token, {"dpo/correct:sum": correct, "dpo/margin:sum": margin_sum}


def _clip_bounds(config: Mapping[str, float]) -> tuple[float, float]:
    low = float(config.get("clip_low_threshold", DEFAULT_CLIP_LOW))
    high = float(config.get("clip_high_threshold", DEFAULT_CLIP_HIGH))
    if not 0.0 <= low <= 1.0 <= high:
        raise UserError(
            f"clip thresholds are ratio bounds and need 0 <= clip_low_threshold <= 1 <= clip_high_threshold; "
            f"got {low} and {high} (Tinker's defaults are {DEFAULT_CLIP_LOW} and {DEFAULT_CLIP_HIGH})"
        )
    return low, high


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
            raise UserError(f"loss_fn_config keys {unknown} mean nothing to {name!r}; it takes {list(self.config_keys)}")
        if "clip_low_threshold" in self.config_keys:
            _clip_bounds(config)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in config.values()):
            raise UserError(f"loss_fn_config values must be finite numbers; got {dict(config)}")
        if "ratio_cap" in self.config_keys and (config.get("ratio_cap", 1.0) <= 0 or config.get("kl_coeff", 0.0) < 0):
            raise UserError(f"{name!r} needs ratio_cap > 0 and kl_coeff >= 0; got {dict(config)}")


_RL_INPUTS = ("target_tokens", "logprobs", "advantages")
_CLIP_KEYS = ("clip_low_threshold", "clip_high_threshold")

LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(cross_entropy, ("target_tokens", "weights")),
    "importance_sampling": LossSpec(importance_sampling, _RL_INPUTS),
    "ppo": LossSpec(ppo, _RL_INPUTS, _CLIP_KEYS),
    "cispo": LossSpec(cispo, _RL_INPUTS, _CLIP_KEYS),
    "dro": LossSpec(dro, _RL_INPUTS, ("beta",)),
    "stable_reinforce": LossSpec(stable_reinforce, ("target_tokens", "advantages", "sampler_logprobs", "sampled_mask"),
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
