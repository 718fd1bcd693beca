"""Shared fixtures: a tiny random Gemma3 model (no download, no pretraining) for engine tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tinker import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

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


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return make_tiny_gemma()


@pytest.fixture
def engine():
    from kubetune.engine import Engine

    return Engine(make_tiny_gemma(), None, base_model="tiny-test")


# ----------------------------------------------------------------------------- training server
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


API_KEYS = {"alice": "tml-alice-key-0001", "bob": "tml-bob-key-00002"}  # tenant -> API key
_CORPUS = [
    "select name from users where age > 30;",
    "the quick brown fox jumps over the lazy dog.",
    "count the rows in the orders table grouped by city.",
    "SELECT COUNT(*) FROM singer WHERE country = 'France';",
] * 4


@dataclass
class ApiServer:
    """A real uvicorn server on loopback with the tiny model; ``keys`` maps tenant -> API key."""

    url: str
    service: Any
    model_dir: Path
    keys: dict[str, str]

    def client(self, tenant: str = "alice"):
        import tinker

        return tinker.ServiceClient(base_url=self.url, api_key=self.keys[tenant])


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Starts ``kubetune.api`` on a free port in a background thread for the whole test session.

    The model and its tokenizer are saved to a directory first, so the advertised model name is a
    local path that ``AutoTokenizer.from_pretrained`` (the SDK's ``get_tokenizer``) resolves offline.
    """
    from kubetune.api import ServerConfig, TinkerService
    from kubetune.api.embedded import running_server
    from kubetune.engine import Engine
    from kubetune.models.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("api")
    model_dir = root / "tiny-gemma"
    tokenizer = train_tokenizer(_CORPUS, vocab_size=300)
    model = make_tiny_gemma(0, vocab_size=len(tokenizer))
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = ServerConfig(
        base_model=str(model_dir),
        checkpoint_dir=root / "checkpoints",
        api_keys={key: tenant for tenant, key in API_KEYS.items()},
        poll_hold_seconds=5.0,  # short holds exercise the try_again path
        seq_gap_timeout_seconds=2.0,
        max_request_bytes=1 << 20,
        fwdbwd_max_chunk_len=2,  # batches of 3+ datums arrive as concurrent, out-of-order chunks
        op_trace=root / "operations.jsonl",
    )
    service = TinkerService(Engine(model, tokenizer, base_model=str(model_dir)), config)
    with running_server(service, start_timeout_s=30) as url:
        yield ApiServer(url, service, model_dir, dict(API_KEYS))
