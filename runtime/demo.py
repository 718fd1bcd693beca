"""The embedded default, end to end on one machine: task → tiny base model → LoRA SFT on the engine → eval.

Run by ``make demo`` (``kubetune demo``). Everything is built locally: the SQLite databases and
questions, the tokenizer, the Gemma-architecture base model; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tinker import types

from .engine import Engine, LoraSpec
from .evaluate import engine_generator, evaluate_examples
from .tasks.text2sql import build_dataset, load_split, task_statistics
from .training_data import mean_token_batch, tokenize_pair, warmup_cosine_lr

EVAL_SPLITS = ("heldout_values", "heldout_paraphrase", "heldout_database")


@dataclass
class DemoConfig:
    workdir: Path = Path("runs/demo")
    seed: int = 0
    sft_steps: int = 400  # held-out values 0.03 at 150 steps, 0.32 at 400, 0.30 at 800 (docs/sft-baseline.md)
    batch_size: int = 16  # prompt→SQL pairs per step
    learning_rate: float = 3e-3  # peak LoRA learning rate; linear warmup, then cosine decay to 10 %
    warmup_steps: int = 10
    lora_rank: int = 16
    eval_examples: int = 100  # per held-out split, the first N (deterministic)
    max_length: int = 320  # tokens per training sequence; longer prompts lose schema text from the left
    pretrain_steps: int | None = None  # None: the bootstrap's default (see docs/models.md)


def learning_rate_at(step: int, config: DemoConfig) -> float:
    """Linear warmup to the peak, then cosine decay to a tenth of it."""
    return warmup_cosine_lr(step, config.learning_rate, config.warmup_steps, config.sft_steps)


def run_demo(config: DemoConfig, console: Console | None = None) -> dict:
    """Runs the whole embedded job and returns its summary (also written to ``workdir/summary.json``)."""
    from .models.bootstrap import bootstrap_tiny_model
    from .models.reference import load_base_model

    console = console or Console()
    started = time.perf_counter()
    workdir = Path(config.workdir)
    data_dir = workdir / "data"

    console.rule("[bold]1. text-to-SQL task")
    build_dataset(data_dir, seed=config.seed)
    stats = task_statistics(data_dir)
    console.print(_stats_table(stats))

    console.rule("[bold]2. tiny Gemma-architecture base model")
    last = [0.0]

    def progress(step: int, loss: float) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            console.print(f"  pretraining step {step}: loss {loss:.3f}")

    extra = {"steps": config.pretrain_steps} if config.pretrain_steps is not None else {}
    boot = bootstrap_tiny_model(workdir / "base-model", seed=config.seed, progress=progress, **extra)
    console.print(
        f"  {boot.path}: {boot.params / 1e6:.2f} M parameters, "
        + ("cached (content hash match)" if boot.cache_hit else f"pretrained {boot.steps} steps in {boot.build_seconds:.0f} s")
        + f", final loss {boot.final_loss:.3f}"
    )
    model, tokenizer = load_base_model(str(boot.path))
    engine = Engine(model, tokenizer, base_model=str(boot.path))
    job = engine.create_model("demo-sft", LoraSpec(rank=config.lora_rank, seed=config.seed,
                                                          train_unembed=False))  # see SFTConfig.train_unembed
    console.print(f"  engine on {engine.device}; LoRA rank {config.lora_rank}: {job.trainable_parameters():,} trainable parameters")

    evals = {split: load_split(data_dir, split)[: config.eval_examples] for split in EVAL_SPLITS}
    generate = engine_generator(engine, tokenizer, "demo-sft")

    console.rule("[bold]3. held-out execution accuracy before SFT")
    before = _evaluate(generate, evals, data_dir, console)

    console.rule(f"[bold]4. LoRA SFT on the engine: {config.sft_steps} steps × {config.batch_size}")
    train = load_split(data_dir, "train")
    pairs = [tokenize_pair(tokenizer, ex.prompt(data_dir), ex.completion) for ex in train]
    order = random.Random(config.seed)
    queue: list[int] = []
    sft_started = time.perf_counter()
    losses = []
    for step in range(config.sft_steps):
        if len(queue) < config.batch_size:
            refill = list(range(len(pairs)))
            order.shuffle(refill)
            queue.extend(refill)
        batch = [pairs[queue.pop()] for _ in range(config.batch_size)]
        data = mean_token_batch(batch, config.max_length)
        loss = engine.forward_backward("demo-sft", data, "cross_entropy").metrics["loss:sum"]
        lr = learning_rate_at(step, config)
        engine.optim_step("demo-sft", types.AdamParams(learning_rate=lr, grad_clip_norm=1.0))
        losses.append(loss)
        if step % 25 == 0 or step == config.sft_steps - 1:
            console.print(f"  step {step:4d}  loss {loss:.4f}  lr {lr:.2e}  {time.perf_counter() - sft_started:5.1f} s")
    sft_seconds = time.perf_counter() - sft_started

    console.rule("[bold]5. held-out execution accuracy after SFT")
    after = _evaluate(generate, evals, data_dir, console)
    adapter_dir = engine.save_weights_for_sampler("demo-sft", workdir / "adapter")

    table = Table(title="held-out execution accuracy (greedy)")
    for column in ("split", "examples", "before SFT", "after SFT", "valid SQL after"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split in EVAL_SPLITS:
        table.add_row(split, str(after[split]["total"]), f"{before[split]['accuracy']:.3f}",
                      f"{after[split]['accuracy']:.3f}", f"{after[split]['valid_sql']:.3f}")
    console.print(table)
    summary = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "task": stats,
        "base_model": {"path": str(boot.path), "params": boot.params, "cache_hit": boot.cache_hit,
                       "pretrain_seconds": boot.build_seconds, "final_loss": boot.final_loss},
        "sft": {"steps": config.sft_steps, "seconds": round(sft_seconds, 1), "first_loss": losses[0],
                "last_loss": losses[-1]},
        "accuracy_before": {s: before[s]["accuracy"] for s in EVAL_SPLITS},
        "accuracy_after": {s: after[s]["accuracy"] for s in EVAL_SPLITS},
        "valid_sql_after": {s: after[s]["valid_sql"] for s in EVAL_SPLITS},
        "adapter": str(adapter_dir),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"adapter (PEFT dir): {adapter_dir}\nsummary: {workdir / 'summary.json'}\n"
                  f"wall time {summary['wall_seconds']:.0f} s")
    return summary


def _evaluate(generate, evals: dict, data_dir: Path, console: Console) -> dict[str, dict]:
    results = {}
    for split, examples in evals.items():
        t0 = time.perf_counter()
        results[split] = evaluate_examples(generate, examples, data_dir)
        console.print(f"  {split:20s} exec-acc {results[split]['accuracy']:.3f}  valid SQL "
                      f"{results[split]['valid_sql']:.3f}  ({len(examples)} examples, {time.perf_counter() - t0:.0f} s)")
    return results


def _stats_table(stats: dict) -> Table:
    """One row per split: examples, databases, templates, wordings."""
    dbs = stats["databases"]
    table = Table(title=f"embedded text-to-SQL task: {stats['templates']} templates, {stats['wordings']} wordings, "
                        f"train DBs {', '.join(dbs['train'])}; held-out DB {', '.join(dbs['heldout'])}")
    for column in ("split", "examples", "databases", "templates", "wordings"):
        table.add_column(column, justify="left" if column in ("split", "databases") else "right")
    for split, info in stats["splits"].items():
        table.add_row(split, str(info["examples"]), ", ".join(info["databases"]), str(info["templates"]),
                      str(info["wordings"]))
    return table
