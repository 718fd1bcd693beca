"""Supervised fine-tuning over the Tinker API: cross-entropy on prompt → SQL pairs, completion tokens weighted.

A plain loop against the official ``tinker`` SDK, so it runs unchanged against a shared server on
a cluster (``base_url``) or the embedded one it starts in this process (``base_url=None``).
Writes, under ``out_dir``: ``metrics.jsonl`` (one line per step), ``checkpoints.jsonl`` (one line
per saved state, the record ``--resume`` continues from) and ``result.json``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tinker import types

from ..api.embedded import EmbeddedServer, embedded_server
from ..tasks.text2sql import load_split
from ..training_data import Tokenized, mean_token_batch, tokenize_pair, warmup_cosine_lr


@dataclass
class SFTConfig:
    data_dir: Path  # a dataset in Spider layout; its `train` split is used
    out_dir: Path
    base_url: str | None = None  # None: an embedded server in this process
    base_model: str = "tiny"  # model reference (embedded) or a name the server advertises
    api_key: str = "tml-local"
    steps: int = 150
    batch_size: int = 16  # prompt → SQL pairs per step
    learning_rate: float = 3e-3  # peak; linear warmup, then cosine decay to 10 %
    warmup_steps: int = 10
    lora_rank: int = 16
    seed: int = 0
    max_length: int = 320  # tokens per sequence; longer prompts lose schema text from the left
    save_every: int = 50  # steps between saved states (0: only the final one)
    resume: bool = False  # continue from the last state in out_dir/checkpoints.jsonl


def learning_rate_at(step: int, config: SFTConfig) -> float:
    """Linear warmup to the peak, then cosine decay to a tenth of it."""
    return warmup_cosine_lr(step, config.learning_rate, config.warmup_steps, config.steps)


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of one step: a pure function of the step, so a resumed run sees the same batches.

    Epochs are seeded shuffles of the dataset laid end to end; step ``s`` takes positions
    ``s·B … s·B + B - 1`` of that sequence.
    """
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_examples)
        order = list(range(n_examples))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        out.append(order[offset])
    return out


def step_data(pairs: list[Tokenized], indices: list[int], max_length: int) -> list[types.Datum]:
    return mean_token_batch([pairs[i] for i in indices], max_length)


def _last_checkpoint(out_dir: Path) -> dict | None:
    path = out_dir / "checkpoints.jsonl"
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


@contextmanager
def _server(config: SFTConfig) -> Iterator[tuple[str, str, EmbeddedServer | None]]:
    """(base_url, base model name, the embedded server if this run started one)."""
    if config.base_url is not None:
        yield config.base_url, config.base_model, None
        return
    with embedded_server(config.base_model, checkpoint_dir=config.out_dir / "checkpoints") as server:
        yield server.url, server.model_name, server


def run_sft(config: SFTConfig, log=print) -> dict:
    """Trains, checkpoints and returns the result (also written to ``out_dir/result.json``)."""
    import tinker

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last = _last_checkpoint(out_dir) if config.resume else None
    if not config.resume:
        for name in ("metrics.jsonl", "checkpoints.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
    with _server(config) as (url, base_model, embedded):
        service = tinker.ServiceClient(base_url=url, api_key=config.api_key)
        if last is not None:
            trainer = service.create_training_client_from_state_with_optimizer(last["state_path"]).result()
            start = last["step"] + 1
            log(f"resuming from {last['state_path']} at step {start}")
        else:
            trainer = service.create_lora_training_client(base_model=base_model, rank=config.lora_rank,
                                                          seed=config.seed).result()
            start = 0
        tokenizer = trainer.get_tokenizer()
        train = load_split(config.data_dir, "train")
        pairs = [tokenize_pair(tokenizer, ex.prompt(config.data_dir), ex.completion) for ex in train]
        started = time.perf_counter()
        with open(out_dir / "metrics.jsonl", "a") as metrics, open(out_dir / "checkpoints.jsonl", "a") as ckpts:
            for step in range(start, config.steps):
                data = step_data(pairs, batch_indices(step, len(pairs), config.batch_size, config.seed),
                                 config.max_length)
                lr = learning_rate_at(step, config)
                fwd = trainer.forward_backward(data, "cross_entropy")
                opt = trainer.optim_step(types.AdamParams(learning_rate=lr, grad_clip_norm=1.0))
                loss = fwd.result().metrics["loss:sum"]
                grad_norm = opt.result().metrics.get("optim/grad_norm")
                row = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                       "seconds": round(time.perf_counter() - started, 3)}
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                if step % 25 == 0 or step == config.steps - 1:
                    log(f"step {step:4d}  loss {loss:.4f}  lr {lr:.2e}  {row['seconds']:6.1f} s")
                final = step == config.steps - 1
                if final or (config.save_every and (step + 1) % config.save_every == 0):
                    name = "final" if final else f"{step:06d}"
                    state = trainer.save_state(name).result().path
                    ckpts.write(json.dumps({"step": step, "name": name, "state_path": state}) + "\n")
                    ckpts.flush()
        sampler = trainer.save_weights_for_sampler("final").result().path
        adapter_dir = str(embedded.local_path(config.api_key, sampler)) if embedded is not None else None
    result = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
              "sampler_path": sampler, "adapter_dir": adapter_dir, "state_path": _last_checkpoint(out_dir)["state_path"],
              "steps": config.steps, "seconds": round(time.perf_counter() - started, 2)}
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result
