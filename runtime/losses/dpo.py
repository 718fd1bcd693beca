"""DPO (sigmoid), the one objective, with RPO's NLL anchor.

Per pair, with ``π`` the policy's and ``π_ref`` the reference's summed log-probabilities of an
answer (chosen ``c``, rejected ``r``) and ``m = β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]``::

    loss_pair = −log σ(m) + nll_weight · (−log π(c) / |c|)

``|c|`` is the chosen answer's token count, so the anchor is its mean per-token NLL (0 weight:
plain DPO). Two callers share :func:`dpo_loss`:

- the engine's pairwise ``dpo`` loss (a kubetune extension of the Tinker API: one forward and
  backward over datums laid out chosen, rejected, chosen, …), through :func:`dpo_pairs`;
- the DPO recipe's client-side loss for ``forward_backward_custom`` (any Tinker-compatible service).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import UserError

Tensor = torch.Tensor
DEFAULT_DPO_BETA = 0.1


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float, nll_weight: float = 0.0,
             chosen_tokens: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair losses ``(P,)`` from summed sequence log-probabilities (each ``(P,)``), and the
    detached per-pair margin ``m`` and implicit rewards ``β·(log π − log π_ref)`` of either answer.

    ``chosen_tokens`` (``(P,)``, the chosen answers' token counts) is needed when ``nll_weight``
    is not 0."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    per_pair = -torch.nn.functional.logsigmoid(margin)
    if nll_weight:
        if chosen_tokens is None:
            raise ValueError("dpo_loss with nll_weight needs chosen_tokens "
                             "(the chosen answers' token counts)")
        per_pair = per_pair - nll_weight * policy_chosen / chosen_tokens.clamp(min=1)
    return per_pair, {"margin": margin.detach(), "chosen_reward": chosen_reward.detach(),
                      "rejected_reward": rejected_reward.detach()}


def dpo_pairs(target_logprobs: list[Tensor], inputs: list[Mapping[str, Tensor]],
              config: Mapping[str, float]) -> tuple[Tensor, list[Tensor], dict[str, float]]:
    """The engine's pairwise ``dpo`` loss over rows (chosen, rejected, …): (total, per-token loss
    per row, metrics ``dpo/correct:sum`` and ``dpo/margin:sum``).

    A row's summed log-probability is ``sum(weights · logp)`` and its reference ``sum(weights ·
    ref_logprobs)``; the total is ``scale · Σ loss_pair``. Each pair's loss is spread over its
    weighted tokens in the per-token output (a pair's per-token outputs sum to its loss)."""
    if not target_logprobs or len(target_logprobs) % 2:
        raise UserError(f"the dpo loss takes datums in (chosen, rejected) pairs; this request has "
                        f"{len(target_logprobs)} datums (an odd count: a pair was split or is incomplete)")
    beta = float(config.get("beta", DEFAULT_DPO_BETA))
    scale = float(config.get("scale", 1.0))
    nll_weight = float(config.get("nll_weight", 0.0))
    policy = torch.stack([(lp * x["weights"]).sum() for lp, x in zip(target_logprobs, inputs, strict=True)])
    ref = torch.stack([(x["ref_logprobs"] * x["weights"]).sum() for x in inputs])
    chosen_tokens = torch.stack([x["weights"].sum() for x in inputs[0::2]])
    per_pair, parts = dpo_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], beta, nll_weight,
                               chosen_tokens)
    per_pair = per_pair * scale
    per_token: list[Tensor] = []
    for pair, loss in enumerate(per_pair.detach()):
        chosen, rejected = inputs[2 * pair]["weights"] != 0, inputs[2 * pair + 1]["weights"] != 0
        n_weighted = float(chosen.sum() + rejected.sum()) or 1.0
        per_token += [chosen.float() * loss / n_weighted, rejected.float() * loss / n_weighted]
    margin = parts["margin"]
    return per_pair.sum(), per_token, {"dpo/correct:sum": float((margin > 0).sum()),
                                       "dpo/margin:sum": float(margin.sum())}
