"""Supervised fine-tuning over the Tinker API: cross-entropy on prompt → SQL pairs, completion
tokens weighted.

A plain loop against the official ``tinker`` SDK at ``base_url``. Writes, under ``out_dir``:
``metrics.jsonl`` (one line per step), ``checkpoints.jsonl`` (one line per saved state, the record
``resume`` continues from), ``adapter/`` (the final PEFT adapter) and ``result.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinker import types

from ..tasks.text2sql import load_split
from .common import RunLog, RunSettings, finish, open_trainer, should_save, tinker_session
from .data import Tokenized, batch_indices, mean_token_batch, tokenize_pair, warmup_cosine_lr


@dataclass
class SFTConfig(RunSettings):
    """LoRA SFT on the dataset's `train` split."""

    # Held-out values 0.03 after 150 steps, 0.32 after 400, 0.30 after 800 (docs/sft-baseline.md).
    steps: int = 400
    batch_size: int = 16  # prompt → SQL pairs per step
    learning_rate: float = 3e-3  # peak; linear warmup, then cosine decay to 10 %
    warmup_steps: int = 10
    max_length: int = 320  # tokens per sequence; longer prompts lose schema text from the left


def learning_rate_at(step: int, config: SFTConfig) -> float:
    """Linear warmup to the peak, then cosine decay to a tenth of it."""
    return warmup_cosine_lr(step, config.learning_rate, config.warmup_steps, config.steps)


def step_data(pairs: list[Tokenized], indices: list[int], max_length: int) -> list[types.Datum]:
    return mean_token_batch([pairs[i] for i in indices], max_length)


def run_sft(config: SFTConfig, log=print) -> dict:
    """Trains, checkpoints, evaluates and returns the result (also written to ``out_dir/result.json``)."""
    run = RunLog(config.out_dir, config.resume)
    with tinker_session(config.base_url, config.api_key) as service:
        trainer, start = open_trainer(service, config, run, log)
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
            run.metrics({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                         "seconds": run.elapsed()})
            if step % 25 == 0 or step == config.steps - 1:
                log(f"step {step:4d}  loss {loss:.4f}  lr {lr:.2e}  {run.elapsed():6.1f} s")
            if name := should_save(step, config.steps, config.save_every):
                run.checkpoint(step, name, trainer.save_state(name).result().path)
        return finish(service, trainer, tokenizer, run, config, log)
