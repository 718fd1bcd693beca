"""Turns Tinker ``Datum`` lists into padded tensors, checking everything before any compute runs.

Validation happens up front so that a bad datum anywhere in a batch fails the whole call before a
single gradient is accumulated: the job's state after an error is exactly its state before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tinker import types

from ..errors import UserError
from ..losses import LossSpec


@dataclass
class Batch:
    """A right-padded batch; ``lengths[i]`` real positions of row ``i``."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64
    target_tokens: torch.Tensor  # (B, T) int64, 0 on padding
    inputs: dict[str, torch.Tensor]  # loss inputs, each (B, T) float32, 0 on padding
    lengths: list[int]


def tokens_of(model_input: types.ModelInput, vocab_size: int, what: str = "model_input") -> list[int]:
    """Flattens a ModelInput of text chunks into token ids, rejecting ids outside the vocabulary."""
    tokens: list[int] = []
    for chunk in model_input.chunks:
        if not isinstance(chunk, types.EncodedTextChunk):
            raise UserError(
                f"{what} holds a {type(chunk).__name__}; this server serves text-only models, "
                "send EncodedTextChunk tokens"
            )
        tokens.extend(int(t) for t in chunk.tokens)
    check_token_ids(tokens, vocab_size, what)
    return tokens


def check_token_ids(tokens: Sequence[int], vocab_size: int, what: str) -> None:
    """Raises a UserError naming the first token id outside ``[0, vocab_size)``."""
    for position, token in enumerate(tokens):
        if not 0 <= token < vocab_size:
            raise UserError(
                f"{what} has token id {token} at position {position}, outside the model's vocabulary "
                f"[0, {vocab_size}); tokenize with the model's own tokenizer"
            )


def collate(data: Sequence[types.Datum], loss: LossSpec, vocab_size: int, max_length: int) -> Batch:
    """Validates every datum against ``loss`` and packs the batch into right-padded tensors."""
    if not data:
        raise UserError("forward_backward needs at least one Datum; got an empty list")
    rows: list[tuple[list[int], dict[str, torch.Tensor]]] = []
    for index, datum in enumerate(data):
        where = f"data[{index}]"
        tokens = tokens_of(datum.model_input, vocab_size, f"{where}.model_input")
        if not tokens:
            raise UserError(f"{where}.model_input is empty")
        if len(tokens) > max_length:
            raise UserError(
                f"{where} has {len(tokens)} tokens; the model's context is {max_length}. Truncate it"
            )
        missing = [name for name in loss.inputs if name not in datum.loss_fn_inputs]
        if missing:
            raise UserError(
                f"{where}.loss_fn_inputs lacks {missing}; this loss needs {list(loss.inputs)}"
            )
        values: dict[str, torch.Tensor] = {}
        for name in loss.inputs:
            tensor = datum.loss_fn_inputs[name].to_torch()
            if tensor.dim() != 1 or tensor.shape[0] != len(tokens):
                raise UserError(
                    f"{where}.loss_fn_inputs[{name!r}] has shape {list(tensor.shape)}; it must be "
                    f"[{len(tokens)}], one entry per model_input token (position i predicts token i+1)"
                )
            if name == "target_tokens":
                check_token_ids(tensor.tolist(), vocab_size, f"{where}.loss_fn_inputs['target_tokens']")
                values[name] = tensor.to(torch.int64)
            else:
                values[name] = tensor.to(torch.float32)
                if not torch.isfinite(values[name]).all():
                    raise UserError(f"{where}.loss_fn_inputs[{name!r}] contains NaN or infinity")
        rows.append((tokens, values))

    width = max(len(tokens) for tokens, _ in rows)
    size = len(rows)
    input_ids = torch.zeros(size, width, dtype=torch.int64)
    attention_mask = torch.zeros(size, width, dtype=torch.int64)
    target_tokens = torch.zeros(size, width, dtype=torch.int64)
    inputs = {name: torch.zeros(size, width) for name in loss.inputs if name != "target_tokens"}
    for row, (tokens, values) in enumerate(rows):
        n = len(tokens)
        input_ids[row, :n] = torch.tensor(tokens)
        attention_mask[row, :n] = 1
        target_tokens[row, :n] = values["target_tokens"]
        for name, tensor in inputs.items():
            tensor[row, :n] = values[name]
    return Batch(input_ids, attention_mask, target_tokens, inputs, [len(t) for t, _ in rows])
