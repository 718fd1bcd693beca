"""Datum builders of the tests: written out here, independent of the recipes' own builders."""

from __future__ import annotations

import numpy as np
from tinker import types


def sft_datum(tokens: list[int], prompt_len: int) -> types.Datum:
    """Next-token datum: inputs tokens[:-1], targets tokens[1:], loss on the completion only."""
    weights = [0.0] * (prompt_len - 1) + [1.0] * (len(tokens) - prompt_len)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": np.asarray(tokens[1:], dtype=np.int64),
                        "weights": np.asarray(weights, dtype=np.float32)},
    )


def rl_datum(tokens: list[int], logprobs: list[float], advantage: float) -> types.Datum:
    n = len(tokens) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": np.asarray(tokens[1:], dtype=np.int64),
                        "logprobs": np.asarray(logprobs[:n], dtype=np.float32),
                        "advantages": np.full(n, advantage, dtype=np.float32)},
    )
