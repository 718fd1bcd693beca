"""Tinker's built-in per-datum losses as pure functions of per-token log-probabilities.

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
- ``stable_reinforce``:    ``-sum(m * (sg(min(r_s, cap)) * target_logprobs * A``
                           ``- kl_coeff / 2 * (target_logprobs - q)^2))``
                           with ``q = sampler_logprobs`` the log-probabilities the *server* recorded when it
                           sampled the tokens, ``r_s = exp(target_logprobs - q)`` and ``m = sampled_mask``
                           (1 on sampled tokens, 0 on prompt tokens). ``cap`` (``ratio_cap``, default 2)
                           truncates the importance weight, so a token the sampler drew far more rarely than
                           the trainer now would cannot blow the step up (off-policy async RL, different
                           numerics); ``kl_coeff`` (default 0) keeps the policy near the sampler. The
                           service fills ``sampler_logprobs`` and ``sampled_mask`` from the datum's
                           provenance spans (``runtime/api/stability.py``); Tinker defines its own
                           objective for this name, so numbers are not comparable with its hosted loss.

kubetune's pairwise ``dpo`` extension is in ``dpo.py`` beside this file.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import UserError

Tensor = torch.Tensor
LossOutput = tuple[Tensor, Tensor]  # (loss summed over the datum, per-token loss (N,))

DEFAULT_CLIP_LOW = 0.8
DEFAULT_CLIP_HIGH = 1.2
DEFAULT_DRO_BETA = 0.05
DEFAULT_STABLE_RATIO_CAP = 2.0
DEFAULT_STABLE_KL_COEFF = 0.0


def cross_entropy(target_logprobs: Tensor, inputs: Mapping[str, Tensor],
                  config: Mapping[str, float]) -> LossOutput:
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
    low, high = clip_bounds(config)
    advantages = inputs["advantages"]
    ratio = torch.exp(target_logprobs - inputs["logprobs"])
    clipped = torch.clamp(ratio, low, high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    return per_token.sum(), per_token


def cispo(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Clipped ratio as a constant coefficient of the policy gradient: ``-sum(sg(clip(r)) * logp * A)``."""
    low, high = clip_bounds(config)
    ratio = torch.exp(target_logprobs - inputs["logprobs"])
    coefficient = torch.clamp(ratio, low, high).detach()
    per_token = -coefficient * target_logprobs * inputs["advantages"]
    return per_token.sum(), per_token


def dro(target_logprobs: Tensor, inputs: Mapping[str, Tensor], config: Mapping[str, float]) -> LossOutput:
    """Policy gradient with a quadratic penalty on the log-ratio:
    ``-sum(logp * A - beta/2 * (logp - logq)^2)``."""
    beta = float(config.get("beta", DEFAULT_DRO_BETA))
    log_ratio = target_logprobs - inputs["logprobs"]
    per_token = -(target_logprobs * inputs["advantages"] - 0.5 * beta * log_ratio**2)
    return per_token.sum(), per_token


def stable_reinforce(target_logprobs: Tensor, inputs: Mapping[str, Tensor],
                     config: Mapping[str, float]) -> LossOutput:
    """Truncated-importance-weighted REINFORCE against the server's own sampling record."""
    cap = float(config.get("ratio_cap", DEFAULT_STABLE_RATIO_CAP))
    kl_coeff = float(config.get("kl_coeff", DEFAULT_STABLE_KL_COEFF))
    sampled = inputs["sampled_mask"]
    log_ratio = target_logprobs - inputs["sampler_logprobs"]
    weight = torch.exp(log_ratio.detach()).clamp(max=cap)
    per_token = -sampled * (weight * target_logprobs * inputs["advantages"] - 0.5 * kl_coeff * log_ratio**2)
    return per_token.sum(), per_token


def clip_bounds(config: Mapping[str, float]) -> tuple[float, float]:
    low = float(config.get("clip_low_threshold", DEFAULT_CLIP_LOW))
    high = float(config.get("clip_high_threshold", DEFAULT_CLIP_HIGH))
    if not 0.0 <= low <= 1.0 <= high:
        raise UserError(
            f"clip thresholds are ratio bounds and need 0 <= clip_low_threshold <= 1 <= clip_high_threshold; "
            f"got {low} and {high} (Tinker's defaults are {DEFAULT_CLIP_LOW} and {DEFAULT_CLIP_HIGH})"
        )
    return low, high
