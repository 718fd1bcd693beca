"""Token sampling with a KV cache: Tinker's ``SamplingParams`` on a Hugging Face causal LM.

Logprobs reported for sampled tokens are those of the model's own distribution (log-softmax of the
raw logits, before temperature / top-k / top-p), which is what ``forward_backward`` computes for the
same tokens: on-policy samples at temperature 1 give an importance ratio of exactly 1 up to float noise.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tinker import types

from ..errors import UserError

MAX_SAMPLES_PER_REQUEST = 128


@dataclass(frozen=True)
class StopRule:
    """When a sequence ends: any of ``token_ids`` sampled, or any of ``strings`` decoded."""

    token_ids: frozenset[int]
    strings: tuple[str, ...]

    @classmethod
    def from_params(cls, stop: str | Sequence[str] | Sequence[int] | None,
                    eos_ids: Sequence[int]) -> StopRule:
        """``None`` stops at EOS; ``[]`` never stops early; token ids replace EOS; strings add to it."""
        if stop is None:
            return cls(frozenset(eos_ids), ())
        if isinstance(stop, str):
            return cls(frozenset(eos_ids), (stop,))
        items = list(stop)
        if not items:
            return cls(frozenset(), ())
        if all(isinstance(s, int) and not isinstance(s, bool) for s in items):
            return cls(frozenset(int(s) for s in items), ())
        if all(isinstance(s, str) for s in items):
            if any(s == "" for s in items):
                raise UserError("stop strings must not be empty")
            return cls(frozenset(eos_ids), tuple(items))
        raise UserError("stop must be a string, a list of strings or a list of token ids, not a mix")


def _validate(params: types.SamplingParams, num_samples: int) -> None:
    if not 1 <= num_samples <= MAX_SAMPLES_PER_REQUEST:
        raise UserError(f"num_samples must be between 1 and {MAX_SAMPLES_PER_REQUEST}; got {num_samples}")
    if params.max_tokens is not None and params.max_tokens < 1:
        raise UserError(f"max_tokens must be at least 1; got {params.max_tokens}")
    if params.temperature < 0:
        raise UserError(f"temperature must be >= 0; got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1]; got {params.top_p}")
    if params.top_k == 0 or params.top_k < -1:
        raise UserError(f"top_k must be -1 (no limit) or positive; got {params.top_k}")


def _filter_logits(logits: torch.Tensor, params: types.SamplingParams) -> torch.Tensor:
    """Applies temperature, top-k and top-p to (n, V) logits; masked entries become -inf."""
    logits = logits / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass.
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[list[int]],
    num_samples: int,
    params: types.SamplingParams,
    *,
    eos_ids: Sequence[int],
    max_length: int,
    generator: torch.Generator,
    device: torch.device,
    pad_id: int = 0,
    prompt_logprobs: bool = False,
) -> list[types.SampleResponse]:
    """Samples ``num_samples`` continuations of each prompt, all rows in one batch.

    Prompts are left-padded to a common length (attention mask + explicit positions, so padding
    changes nothing but float rounding); each prompt is prefilled once and its KV cache repeated
    for its samples. Returns one ``SampleResponse`` per prompt, in order.
    """
    _validate(params, num_samples)
    if not prompts or any(not p for p in prompts):
        raise UserError("every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    budget = max_length - longest
    if budget < 1:
        raise UserError(f"a prompt has {longest} tokens; the model's context is {max_length}")
    max_tokens = min(params.max_tokens or budget, budget)
    rule = StopRule.from_params(params.stop, eos_ids)
    if params.seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(int(params.seed))

    count = len(prompts)
    input_ids, mask = _left_pad(prompts, pad_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    prompt_lps: list[np.ndarray | None] = [None] * count
    if prompt_logprobs:
        prompt_lps = _prompt_logprobs(out.logits, input_ids, prompts)
    cache = out.past_key_values
    rows = count * num_samples
    if num_samples > 1:
        cache.batch_repeat_interleave(num_samples)
        mask = mask.repeat_interleave(num_samples, dim=0)
        positions = positions.repeat_interleave(num_samples, dim=0)
    last_logits = out.logits[:, -1].float().repeat_interleave(num_samples, dim=0)  # (rows, V)
    next_position = positions[:, -1:] + 1

    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    reasons: list[str | None] = [None] * rows
    for _ in range(max_tokens):
        chosen, chosen_lp = _next_tokens(last_logits, params, generator, device)
        for i, token in enumerate(chosen.tolist()):
            if reasons[i] is not None:
                continue
            tokens[i].append(token)
            logprobs[i].append(chosen_lp[i])
            if token in rule.token_ids or (rule.strings
                                           and _ends_with_stop(tokenizer, tokens[i], rule.strings)):
                reasons[i] = "stop"
        if all(r is not None for r in reasons):
            break
        mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=-1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position,
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        next_position = next_position + 1
        last_logits = out.logits[:, -1].float()
    return _responses(tokens, logprobs, reasons, prompt_lps, num_samples)


def _left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompts, longest) input ids and attention mask, each prompt right-aligned after ``pad_id``s."""
    longest = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(prompts), longest), dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt):] = torch.tensor(prompt)
        mask[row, longest - len(prompt):] = 1
    return input_ids, mask


def _prompt_logprobs(logits: torch.Tensor, input_ids: torch.Tensor,
                     prompts: Sequence[list[int]]) -> list[np.ndarray | None]:
    """Each prompt token's logprob given the tokens before it (NaN for the first) from the prefill logits."""
    longest = input_ids.shape[1]
    lp_all = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    prompt_lps: list[np.ndarray | None] = []
    for row, prompt in enumerate(prompts):
        real = lp_all[row, longest - len(prompt):].cpu().numpy()  # the first real token has no logprob
        prompt_lps.append(np.concatenate([[np.nan], real]).astype(np.float32))
    return prompt_lps


def _next_tokens(last_logits: torch.Tensor, params: types.SamplingParams, generator: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, list[float]]:
    """Picks every row's next token from (rows, V) logits (greedy at temperature 0); returns the
    tokens and their logprobs under the raw distribution."""
    raw = torch.log_softmax(last_logits, dim=-1)  # (rows, V)
    if params.temperature == 0:
        chosen = raw.argmax(dim=-1)
    else:
        probs = torch.softmax(_filter_logits(last_logits, params), dim=-1)
        chosen = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(device)
    return chosen, raw.gather(-1, chosen[:, None])[:, 0].tolist()


def _responses(tokens: list[list[int]], logprobs: list[list[float]], reasons: list[str | None],
               prompt_lps: list[np.ndarray | None], num_samples: int) -> list[types.SampleResponse]:
    """One ``SampleResponse`` per prompt from its ``num_samples`` consecutive rows; a row that did
    not stop ran out of tokens."""
    responses = []
    for p in range(len(prompt_lps)):
        sequences = [
            types.SampledSequence(
                stop_reason=reasons[i] or "length",  # type: ignore[arg-type]
                sequence_id=uuid.uuid4().hex,
                tokens_np=np.asarray(tokens[i], dtype=np.int32),
                logprobs_np=np.asarray(logprobs[i], dtype=np.float32),
            )
            for i in range(p * num_samples, (p + 1) * num_samples)
        ]
        responses.append(types.SampleResponse(sequences=sequences, prompt_logprobs_np=prompt_lps[p]))
    return responses


def _ends_with_stop(tokenizer, tokens: list[int], strings: tuple[str, ...]) -> bool:
    # Only the tail can newly contain a stop string; decode a window long enough for the longest one.
    window = max(len(s) for s in strings) + 8
    text = tokenizer.decode(tokens[-window:], skip_special_tokens=False)
    return any(s in text for s in strings)
