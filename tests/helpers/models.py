"""A tiny random Gemma3 model (no download, no pretraining) for engine and server tests."""

from __future__ import annotations

import torch

VOCAB = 96

def make_tiny_gemma(seed: int = 0, *, vocab_size: int = VOCAB) -> torch.nn.Module:
    """A 2-layer Gemma3 with random weights; the same seed gives bit-identical weights."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        sliding_window=32,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = 1
    return model
