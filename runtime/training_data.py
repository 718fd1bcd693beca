"""Builds Tinker ``Datum`` objects from text: the one place prompts meet token ids for training."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def supervised_datum(pair: Tokenized, max_length: int | None = None) -> types.Datum:
    """Next-token datum with weight 1 on completion tokens and 0 on the prompt.

    Position ``i`` of ``model_input`` predicts token ``i + 1`` of the full sequence (Tinker's
    alignment). Sequences longer than ``max_length`` lose prompt tokens from the left, never the answer.
    """
    tokens = pair.prompt + pair.completion
    weights = [0.0] * (len(pair.prompt) - 1) + [1.0] * len(pair.completion)
    if max_length is not None and len(tokens) - 1 > max_length:
        cut = len(tokens) - 1 - max_length
        tokens, weights = tokens[cut:], weights[cut:]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
    )


def mean_token_batch(batch: list[Tokenized], max_length: int | None = None) -> list[types.Datum]:
    """Supervised datums weighted 1/N over the batch's N answer tokens: ``loss:sum`` is then the
    mean per-token NLL, comparable across batches of different lengths."""
    n_tokens = sum(len(p.completion) for p in batch)
    data = []
    for pair in batch:
        datum = supervised_datum(pair, max_length)
        weights = datum.loss_fn_inputs["weights"].to_numpy() * (1.0 / n_tokens)
        data.append(types.Datum(model_input=datum.model_input, loss_fn_inputs={
            **datum.loss_fn_inputs, "weights": types.TensorData.from_numpy(weights)}))
    return data


def warmup_cosine_lr(step: int, peak: float, warmup_steps: int, total_steps: int, floor: float = 0.1) -> float:
    """Linear warmup to ``peak`` over ``warmup_steps``, then cosine decay to ``floor × peak`` at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
