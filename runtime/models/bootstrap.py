"""Build the embedded default model offline: train a tokenizer, then pretrain a tiny Gemma3 from scratch.

Nothing is downloaded. The result is an ordinary Hugging Face directory (config, safetensors weights,
generation config, tokenizer) that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load, plus
``kubetune_bootstrap.json`` whose content hash lets a second call with the same inputs return at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers

from ..checkpoint.atomic import atomic_directory
from .device import pick_device
from .tiny_gemma import (
    TINY_GEMMA_DEFAULTS,
    build_tiny_gemma,
    count_parameters,
    tiny_gemma_config,
)
from .tokenizer import EOS_ID, train_tokenizer

logger = logging.getLogger(__name__)

# Bump when the build changes in a way the hashed inputs do not show (tokenizer recipe, packing, loss).
FORMAT_VERSION = 1
METADATA_FILE = "kubetune_bootstrap.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class PretrainSettings:
    """Hyperparameters of the from-scratch pretraining; all of them enter the content hash."""

    steps: int = 200  # ~7 passes over the text2sql corpus; held-out loss rises after ~200 (docs/models.md)
    batch_size: int = 8  # sequences per step
    seq_len: int = 128  # tokens per packed sequence; most corpus documents are far shorter
    lr: float = 2e-3  # peak; a 5 M model from scratch tolerates a high rate after warmup
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio, not to zero
    warmup_fraction: float = 0.1  # linear warmup over the first 10 % of steps
    weight_decay: float = 0.1  # on matrices only (dim >= 2), as in nanoGPT
    betas: tuple[float, float] = (0.9, 0.95)  # beta2 0.95: steadier for short, high-lr runs
    grad_clip: float = 1.0  # max global grad norm
    vocab_size: int = 4096  # tokenizer target; a small corpus may yield fewer tokens


@dataclass(frozen=True)
class BootstrapResult:
    """What :func:`bootstrap_tiny_model` built or found.

    Attributes:
        path: The model directory.
        cache_hit: True when an existing build with the same content hash was returned untouched.
        content_hash: sha256 over corpus, model config, hyperparameters, seed and format version.
        params: Number of parameters (tied embeddings counted once).
        steps: Optimizer steps of the build.
        initial_loss: Training loss of the first batch, before any update (≈ ln(vocab) at init).
        final_loss: Mean training loss over the last 10 steps of the build.
        seconds: Wall seconds of this call (near zero on a cache hit).
        build_seconds: Wall seconds the build took when it ran.
    """

    path: Path
    cache_hit: bool
    content_hash: str
    params: int
    steps: int
    initial_loss: float
    final_loss: float
    seconds: float
    build_seconds: float


def bootstrap_tiny_model(
    out_dir: str | Path,
    corpus: Sequence[str],
    *,
    seed: int = 0,
    steps: int = PretrainSettings.steps,
    batch_size: int = PretrainSettings.batch_size,
    seq_len: int = PretrainSettings.seq_len,
    lr: float = PretrainSettings.lr,
    vocab_size: int = PretrainSettings.vocab_size,
    model_overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    num_threads: int | None = 1,
    progress: Callable[[int, float], None] | None = None,
    force: bool = False,
) -> BootstrapResult:
    """Builds (or finds in ``out_dir``) a tiny Gemma3 pretrained from scratch on ``corpus``.

    Trains a byte-level BPE tokenizer on the corpus, initialises the model from ``seed``, and
    pretrains it as a causal LM on the corpus packed into ``seq_len`` blocks (AdamW, linear warmup
    then cosine decay, grad clip 1.0, fp32). The directory is written atomically. The same inputs on
    the same machine give bit-identical weights.

    Args:
        out_dir: Target directory; replaced as a whole when rebuilt.
        corpus: Documents (schema lines, SQL, English questions); the embedded default is
            ``kubetune.tasks.text2sql.pretraining_corpus(seed)``, passed in by its callers.
        seed: Seeds the weight init and the batch order.
        steps: Optimizer steps.
        batch_size: Packed sequences per step.
        seq_len: Tokens per packed sequence; at most the model's ``max_position_embeddings``.
        lr: Peak learning rate.
        vocab_size: Tokenizer vocabulary target.
        model_overrides: ``Gemma3TextConfig`` fields replacing the tiny defaults (tests use smaller).
        device: Where to train; default :func:`~kubetune.models.device.pick_device`. Not hashed:
            a GPU build is as valid as a CPU one, though not bit-identical to it.
        num_threads: Torch intra-op threads for the duration of the build only (restored after);
            ``None`` keeps the process setting. Default 1: on a 2-core machine that is busy with
            anything else, 2 OpenMP threads made the default build 5x slower (432 s vs 81 s),
            while on an idle one 1 thread still fits the budget. The weights do not depend on
            it (measured bit-identical for 1 and 2 threads), so it is not hashed.
        progress: Called as ``progress(step, loss)`` after every optimizer step (1-based).
        force: Rebuild even if ``out_dir`` holds a build with the same content hash.

    Returns:
        A :class:`BootstrapResult`.

    Raises:
        ValueError: Empty corpus, non-positive sizes, or ``seq_len`` longer than the model's context.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    settings = PretrainSettings(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                                vocab_size=vocab_size)
    overrides = dict(model_overrides or {})
    documents = list(corpus)
    _check_inputs(documents, settings, overrides)

    content_hash = _content_hash(documents, settings, overrides, seed)
    if not force:
        cached = _read_cached(out_dir, content_hash)
        if cached is not None:
            logger.info("tiny model cache hit at %s (%s)", out_dir, content_hash[:12])
            return dataclasses.replace(cached, seconds=time.perf_counter() - started)

    logger.info("bootstrapping tiny model into %s: %d documents, %d steps", out_dir, len(documents), steps)
    with _torch_threads(num_threads):
        model, tokenizer, facts = _build_model(documents, settings, overrides, seed, device, progress)
    metadata = {"content_hash": content_hash, "format_version": FORMAT_VERSION, "seed": seed,
                "seconds": time.perf_counter() - started,
                "num_threads": torch.get_num_threads() if num_threads is None else num_threads, **facts}
    _save_model(out_dir, model, tokenizer, metadata)
    logger.info("tiny model built in %.1f s: loss %.3f -> %.3f", metadata["seconds"],
                metadata["initial_loss"], metadata["final_loss"])
    return _result(out_dir, metadata, cache_hit=False, seconds=time.perf_counter() - started)


def _check_inputs(documents: list[str], settings: PretrainSettings, overrides: dict[str, Any]) -> None:
    if not any(documents):
        raise ValueError("bootstrap corpus is empty")
    steps, batch_size, seq_len = settings.steps, settings.batch_size, settings.seq_len
    if steps < 1 or batch_size < 1 or seq_len < 2:
        raise ValueError(f"need steps >= 1, batch_size >= 1, seq_len >= 2; "
                         f"got {steps}, {batch_size}, {seq_len}")
    max_positions = overrides.get("max_position_embeddings", TINY_GEMMA_DEFAULTS["max_position_embeddings"])
    if seq_len > max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_position_embeddings {max_positions}")


def _build_model(
    documents: list[str],
    settings: PretrainSettings,
    overrides: dict[str, Any],
    seed: int,
    device: str | torch.device | None,
    progress: Callable[[int, float], None] | None,
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerFast, dict[str, Any]]:
    """Trains the tokenizer, then initialises and pretrains the model (left on the CPU, in eval mode).

    Returns them with what the metadata file records about the build.
    """
    tokenizer = train_tokenizer(documents, vocab_size=settings.vocab_size)
    config = tiny_gemma_config(len(tokenizer), **overrides)
    tokenizer.model_max_length = config.max_position_embeddings
    model = build_tiny_gemma(config, seed=seed)
    blocks = _pack(tokenizer(documents, add_special_tokens=True)["input_ids"], settings)
    train_device = torch.device(device) if device is not None else pick_device()
    losses = _pretrain(model, blocks, settings, seed, train_device, progress)
    model.to("cpu").eval()
    facts = {
        "params": count_parameters(model),
        "steps": settings.steps,
        "initial_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "corpus_documents": len(documents),
        "corpus_tokens": int(blocks.numel()),
        "vocab_size": len(tokenizer),
        "settings": dataclasses.asdict(settings),
        "model_overrides": overrides,
        "device": str(train_device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
    }
    return model, tokenizer, facts


def _save_model(out_dir: Path, model: transformers.PreTrainedModel,
                tokenizer: transformers.PreTrainedTokenizerFast, metadata: dict[str, Any]) -> None:
    """Writes model, tokenizer and metadata file into ``out_dir`` atomically, readable by everyone."""
    with atomic_directory(out_dir) as staging:
        model.save_pretrained(staging)  # also writes generation_config.json (eos/pad/bos ids)
        tokenizer.save_pretrained(staging)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        # mkdtemp makes the dir 0700 and the weights are written 0600; a shared model cache (a PVC
        # mounted by pods running as other users) must be readable by everyone.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)


def _content_hash(documents: list[str], settings: PretrainSettings, overrides: dict[str, Any],
                  seed: int) -> str:
    corpus_digest = hashlib.sha256()
    for doc in documents:
        data = doc.encode("utf-8")
        # Length-prefixed so ["ab", "c"] and ["a", "bc"] hash differently.
        corpus_digest.update(len(data).to_bytes(8, "little"))
        corpus_digest.update(data)
    key = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "settings": dataclasses.asdict(settings),
        "model": {**TINY_GEMMA_DEFAULTS, **overrides},
        "corpus_sha256": corpus_digest.hexdigest(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _read_cached(out_dir: Path, content_hash: str) -> BootstrapResult | None:
    try:
        metadata = json.loads((out_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    complete = all((out_dir / name).is_file() for name in ("config.json", WEIGHTS_FILE, "tokenizer.json"))
    if metadata.get("content_hash") != content_hash or not complete:
        return None
    return _result(out_dir, metadata, cache_hit=True, seconds=0.0)


def _result(out_dir: Path, metadata: dict[str, Any], *, cache_hit: bool, seconds: float) -> BootstrapResult:
    return BootstrapResult(
        path=out_dir,
        cache_hit=cache_hit,
        content_hash=metadata["content_hash"],
        params=metadata["params"],
        steps=metadata["steps"],
        initial_loss=metadata["initial_loss"],
        final_loss=metadata["final_loss"],
        seconds=seconds,
        build_seconds=metadata["seconds"],
    )


def _pack(token_ids: list[list[int]], settings: PretrainSettings) -> torch.Tensor:
    """Concatenates ``<bos> doc <eos>`` streams and cuts them into (N, seq_len) blocks.

    Packing instead of padding: corpus documents are a few dozen tokens, so padding to ``seq_len``
    would spend most of each step on pad tokens. A tail shorter than a block is dropped; a corpus
    smaller than one batch is repeated so that a batch can be formed.
    """
    stream = [tok for ids in token_ids for tok in (*ids, EOS_ID)]
    needed = settings.batch_size * settings.seq_len
    if len(stream) < needed:
        stream = stream * math.ceil(needed / len(stream))
    n_blocks = len(stream) // settings.seq_len
    blocks = torch.tensor(stream[: n_blocks * settings.seq_len], dtype=torch.long)
    return blocks.view(n_blocks, settings.seq_len)


def _batches(blocks: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Yields (batch_size, seq_len) batches forever: epochs of a seeded shuffle of the blocks."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(blocks), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield blocks[order[start : start + batch_size]]


def _pretrain(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    settings: PretrainSettings,
    seed: int,
    device: torch.device,
    progress: Callable[[int, float], None] | None,
) -> list[float]:
    """Runs the causal-LM pretraining loop; returns the loss of every step."""
    model.to(device).train()
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]  # norms: decaying them only hurts
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": settings.weight_decay},
         {"params": vectors, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=settings.betas,
    )
    warmup = max(1, round(settings.warmup_fraction * settings.steps))

    def lr_factor(step: int) -> float:  # step is 0-based
        if step < warmup:
            return (step + 1) / warmup
        progress_ratio = (step - warmup) / max(1, settings.steps - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress_ratio))
        return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    losses: list[float] = []
    batches = _batches(blocks, settings.batch_size, seed)
    for step in range(1, settings.steps + 1):
        input_ids = next(batches).to(device)  # (B, T)
        loss = model(input_ids=input_ids, labels=input_ids).loss  # labels are shifted inside the model
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    return losses


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    # Scoped: a library call must not leave the host process with a different thread count.
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
