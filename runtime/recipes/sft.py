"""Supervised fine-tuning over the Tinker API: cross-entropy on prompt → SQL pairs, completion tokens weighted.

A plain loop against the official ``tinker`` SDK, so it runs unchanged against a shared server on
a cluster (``base_url``) or the embedded one it starts in this process (``base_url=None``).
Writes, under ``out_dir``: ``metrics.jsonl`` (one line per step), ``checkpoints.jsonl`` (one line
per saved state, the record ``--resume`` continues from) and ``result.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinker import types

from ..tasks.text2sql import load_split
from ..training_data import Tokenized, mean_token_batch, tokenize_pair, warmup_cosine_lr
from .common import (
    DEFAULT_EVAL_SPLITS,
    RunLog,
    batch_indices,
    finish,
    open_trainer,
    should_save,
    tinker_session,
    training_endpoint,
)


@dataclass
class SFTConfig:
    data_dir: Path  # a dataset in Spider layout; its `train` split is used
    out_dir: Path
    base_url: str | None = None  # None: an embedded server in this process
    base_model: str = "tiny"  # model reference (embedded) or a name the server advertises
    api_key: str = "tml-local"
    checkpoint_dir: Path | None = None  # embedded server's store; default out_dir/checkpoints
    steps: int = 150
    batch_size: int = 16  # prompt → SQL pairs per step
    learning_rate: float = 3e-3  # peak; linear warmup, then cosine decay to 10 %
    warmup_steps: int = 10
    lora_rank: int = 16
    # LoRA on lm_head too (the Tinker API's default). Off: on the tied-embedding tiny model it cost
    # 0.32 -> 0.22 held-out values after 400 steps (docs/recipes.md), and TRL cannot train it.
    train_unembed: bool = False
    seed: int = 0
    max_length: int = 320  # tokens per sequence; longer prompts lose schema text from the left
    max_prompt_tokens: int | None = 256  # at evaluation, the same rule for prompts
    save_every: int = 50  # steps between saved states (0: only the final one)
    resume: bool = False  # continue from the last state in out_dir/checkpoints.jsonl
    eval_examples: int = 50  # per split, the first N, greedy, after training (0: no evaluation)
    eval_splits: tuple[str, ...] = field(default=DEFAULT_EVAL_SPLITS)


def learning_rate_at(step: int, config: SFTConfig) -> float:
    """Linear warmup to the peak, then cosine decay to a tenth of it."""
    return warmup_cosine_lr(step, config.learning_rate, config.warmup_steps, config.steps)


def step_data(pairs: list[Tokenized], indices: list[int], max_length: int) -> list[types.Datum]:
    return mean_token_batch([pairs[i] for i in indices], max_length)


def run_sft(config: SFTConfig, log=print) -> dict:
    """Trains, checkpoints, evaluates and returns the result (also written to ``out_dir/result.json``)."""

    run = RunLog(config.out_dir, config.resume)
    last = run.last_checkpoint() if config.resume else None
    checkpoint_dir = config.checkpoint_dir or Path(config.out_dir) / "checkpoints"
    with training_endpoint(config.base_url, config.base_model, checkpoint_dir) as endpoint, \
            tinker_session(endpoint, config.api_key) as service:
        trainer, start = open_trainer(service, endpoint, last=last, init_state=None,
                                      lora_rank=config.lora_rank, seed=config.seed, log=log,
                                      train_unembed=config.train_unembed)
        tokenizer = trainer.get_tokenizer()
        train = load_split(config.data_dir, "train")
        pairs = [tokenize_pair(tokenizer, ex.prompt(config.data_dir), ex.completion) for ex in train]
        for step in range(start, config.steps):
            data = step_data(pairs, batch_indices(step, len(pairs), config.batch_size, config.seed),
                             config.max_length)
            lr = learning_rate_at(step, config)
            fwd = trainer.forward_backward(data, "cross_entropy")
            opt = trainer.optim_step(types.AdamParams(learning_rate=lr, grad_clip_norm=1.0))
            loss = fwd.result().metrics["loss:sum"]
            grad_norm = opt.result().metrics.get("optim/grad_norm")
            run.metrics({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "seconds": run.elapsed()})
            if step % 25 == 0 or step == config.steps - 1:
                log(f"step {step:4d}  loss {loss:.4f}  lr {lr:.2e}  {run.elapsed():6.1f} s")
            if name := should_save(step, config.steps, config.save_every):
                run.checkpoint(step, name, trainer.save_state(name).result().path)
        return finish(service, trainer, tokenizer, endpoint, run, config, log)
