"""The embedded default model: a ~5 M parameter Gemma3 that trains and samples on a laptop CPU."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from .tokenizer import BOS_ID, EOS_ID, PAD_ID

# Shape of the default model; every value is a Gemma3 architecture field, overridable per call.
TINY_GEMMA_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in real Gemma3
    "head_dim": 64,
    "intermediate_size": 1024,  # 4x hidden, GeGLU
    "max_position_embeddings": 512,  # text-to-SQL prompt + answer fits comfortably
    "sliding_window": 128,
    "tie_word_embeddings": True,  # the embedding is ~1 M of the ~5 M params; do not pay it twice
    # Gemma3 scales scores by query_pre_attn_scalar**-0.5; its default (256) assumes head_dim 256.
    "query_pre_attn_scalar": 64,
    # sdpa runs the same maths as eager (no attention soft-capping in Gemma3) and is faster on CPU.
    "attn_implementation": "sdpa",
}


def tiny_gemma_config(vocab_size: int, **overrides: Any) -> Gemma3TextConfig:
    """Returns the config of the tiny Gemma3.

    Layers use sliding-window attention except the last one, which attends to the full context, the
    local/global mix of real Gemma3 at a scale where it still shows up (4 layers instead of 6n).

    Args:
        vocab_size: Size of the tokenizer's vocabulary (``len(tokenizer)``).
        **overrides: Any ``Gemma3TextConfig`` field, e.g. ``hidden_size=64, num_hidden_layers=2``
            for tests. ``layer_types`` is derived from ``num_hidden_layers`` unless given.

    Returns:
        A ``Gemma3TextConfig`` with Gemma's special ids (pad 0, eos 1, bos 2).
    """
    fields = {**TINY_GEMMA_DEFAULTS, **overrides}
    if "head_dim" in overrides and "query_pre_attn_scalar" not in overrides:
        fields["query_pre_attn_scalar"] = overrides["head_dim"]
    layers = fields["num_hidden_layers"]
    fields.setdefault("layer_types", ["sliding_attention"] * (layers - 1) + ["full_attention"])
    return Gemma3TextConfig(
        vocab_size=vocab_size,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        **fields,
    )


def build_tiny_gemma(config: Gemma3TextConfig, seed: int = 0) -> Gemma3ForCausalLM:
    """Builds a randomly initialised model; the same config and seed give bit-identical weights.

    Args:
        config: Usually from :func:`tiny_gemma_config`.
        seed: Seed of the weight initialisation.

    Returns:
        The model in train mode on the CPU, with ``generation_config`` carrying the eos and pad ids.
    """
    # fork_rng: seed the init without changing the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Counts distinct parameters (tied embeddings once)."""
    return sum(p.numel() for p in model.parameters())
