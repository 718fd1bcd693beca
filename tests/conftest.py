"""Shared fixtures: a tiny random Gemma3 model, an engine on it, and a real training server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from helpers.models import make_tiny_gemma
from helpers.server import API_KEYS, CORPUS, ApiServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return make_tiny_gemma()


@pytest.fixture
def engine():
    from kubetune.engine import Engine

    return Engine(make_tiny_gemma(), None, base_model="tiny-test")


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
    tokenizer = train_tokenizer(CORPUS, vocab_size=300)
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
