"""Datum builders and schedules: the one place prompts meet token ids for training.

Every recipe's datum is a prompt followed by a completion, shifted by one: position ``i`` of
``model_input`` predicts token ``i + 1`` of the sequence (Tinker's alignment), so the targets are
the sequence from its second token on. Per-token loss inputs (weights, sampler log-probabilities,
advantages, reference log-probabilities) are given per completion token; prompt positions get 0.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tinker import types


@dataclass(frozen=True)
class Tokenized:
    """A prompt and its completion as token ids (the completion ends with EOS)."""

    prompt: list[int]
    completion: list[int]


def tokenize_pair(tokenizer, prompt: str, completion: str) -> Tokenized:
    """Tokenizes prompt (with the tokenizer's BOS) and completion (plain, plus EOS) separately.

    Separate tokenization keeps the prompt's ids identical to those sent at sampling time, so the
    model is trained on exactly the boundary it will be asked to continue from.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Tokenized(list(prompt_ids), list(completion_ids))


def prompt_tokens(tokenizer, text: str, max_tokens: int | None) -> list[int]:
    """A prompt's ids (with BOS), keeping only the last ``max_tokens`` (the question and the answer
    cue live at the end; the schema loses its start first), as ``completion_datum``'s
    ``max_length`` does for training."""
    ids = list(tokenizer(text)["input_ids"])
    return ids[-max_tokens:] if max_tokens is not None and len(ids) > max_tokens else ids


def completion_datum(prompt: Sequence[int], completion: Sequence[int], max_length: int | None = None,
                     **per_token: Sequence[float]) -> types.Datum:
    """The shifted datum of ``prompt + completion`` with ``per_token`` loss inputs.

    Each ``per_token`` array holds one value per completion token (``weights=[1.0] * n`` puts the
    loss on the completion only); prompt positions get 0. A sequence longer than ``max_length``
    input tokens loses tokens from the left: the prompt's first (the schema), then, only if the
    completion alone is longer, the completion's first.
    """
    tokens = list(prompt) + list(completion)
    pad = len(prompt) - 1
    inputs = {name: np.asarray([0.0] * pad + [float(v) for v in values], np.float32)
              for name, values in per_token.items()}
    for name, values in per_token.items():
        if len(values) != len(completion):
            raise ValueError(f"{name} has {len(values)} values for {len(completion)} completion tokens")
    cut = max(0, len(tokens) - 1 - max_length) if max_length is not None else 0
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[cut:-1]),
        loss_fn_inputs={"target_tokens": np.asarray(tokens[cut + 1:], np.int64),
                        **{name: types.TensorData.from_numpy(array[cut:]) for name, array in inputs.items()}},
    )


def supervised_datum(pair: Tokenized, max_length: int | None = None, weight: float = 1.0) -> types.Datum:
    """Next-token datum with ``weight`` on every completion token and 0 on the prompt."""
    return completion_datum(pair.prompt, pair.completion, max_length, weights=[weight] * len(pair.completion))


def mean_token_batch(batch: list[Tokenized], max_length: int | None = None) -> list[types.Datum]:
    """Supervised datums weighted 1/N over the batch's N answer tokens: ``loss:sum`` is then the
    mean per-token NLL, comparable across batches of different lengths."""
    n_tokens = sum(len(p.completion) for p in batch)
    return [supervised_datum(pair, max_length, weight=1.0 / n_tokens) for pair in batch]


def with_sample_provenance(datum: types.Datum, sequence_id: str, prompt_len: int,
                           sampled: int) -> types.Datum:
    """``datum`` (one prompt + one sample, shifted by one) naming that sample, as ``stable_reinforce`` needs.

    Inputs are the prompt and all but the last sampled token; targets are the same shifted by one,
    so they cover the prompt from its second token on, then every sampled token."""
    return datum.with_provenance(
        model_input=[types.PromptProvenanceSpan(sequence_id=sequence_id, length=prompt_len),
                     types.SampledProvenanceSpan(sequence_id=sequence_id, length=sampled - 1)],
        loss_fn_inputs=[types.PromptProvenanceSpan(sequence_id=sequence_id, offset=1, length=prompt_len - 1),
                        types.SampledProvenanceSpan(sequence_id=sequence_id, length=sampled)],
    )


def rl_datum(prompt: list[int], completion: list[int], sampled_logprobs: Sequence[float],
             token_advantages: Sequence[float], sequence_id: str | None = None) -> types.Datum:
    """A policy-gradient datum: the sampler's log-probabilities and the advantages per completion token.

    With ``sequence_id`` (the sample's, from a sampler made with ``record_stability_info``) the datum
    also names its sample by provenance spans, as ``stable_reinforce`` needs."""
    datum = completion_datum(prompt, completion, logprobs=sampled_logprobs, advantages=token_advantages)
    if sequence_id is None:
        return datum
    return with_sample_provenance(datum, sequence_id, len(prompt), len(completion))


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of one step: a pure function of the step, so a resumed run sees the same batches.

    Epochs are seeded shuffles of the dataset laid end to end; step ``s`` takes positions
    ``s·B … s·B + B - 1`` of that sequence.
    """
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_examples)
        order = list(range(n_examples))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        out.append(order[offset])
    return out


def warmup_cosine_lr(step: int, peak: float, warmup_steps: int, total_steps: int,
                     floor: float = 0.1) -> float:
    """Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay to ``floor × peak`` at
    ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
