"""``make demo``: the embedded default end to end on one machine.

``run_sweep_demo`` (``kubetune demo``) is the headline: the autoresearch pipeline run by kfp's
local runner (data → base model → per experiment SFT → PPO → evaluate → MLflow child run →
select_best, then an Optuna-proposed round), every step a subprocess in this environment. As on
a cluster, the training steps are clients of one shared training server started here, which
packs them onto one engine (steps that each started their own would hold a model apiece and
fight over the same cores: two PPO steps side by side ran 6× slower per step than one alone on
2 cores). The results are read back from the MLflow store the steps wrote.

``run_sft_demo`` (``kubetune demo --sft-only``) is the quick look: task → tiny base model → the
SFT recipe on a server started here → held-out accuracy before and after. It is ``kubetune train
sft`` with the same settings, plus the accuracy of the base model before training.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .api.embedded import embedded_server
from .models.bootstrap import bootstrap_tiny_model
from .recipes import SFTConfig, run_sft
from .recipes.common import evaluate_client, served_model, tinker_session
from .tasks.text2sql import build_dataset, pretraining_corpus, task_statistics


def _default_experiments() -> list[dict[str, Any]]:
    from kubetune.pipelines.autoresearch import DEFAULT_EXPERIMENTS

    return [dict(e) for e in DEFAULT_EXPERIMENTS]


@dataclass
class SweepDemoConfig:
    runs_dir: Path = Path("runs")  # pipeline artifacts under RUNS/kfp, MLflow under RUNS/mlflow
    experiments: list[dict[str, Any]] = field(default_factory=_default_experiments)
    second_round: int = 1  # Optuna-proposed experiments after the first round (each ~3 min here)
    # Other autoresearch pipeline parameters (sft_steps, ppo_steps, eval_examples, seed, ...); what is
    # not given keeps the pipeline's own default.
    params: dict[str, Any] = field(default_factory=dict)
    shared_server: bool = True  # one training server for every step (False: each step starts its own)

    def pipeline_params(self) -> dict[str, Any]:
        return {**self.params, "experiments": self.experiments, "second_round": self.second_round}


def run_sweep_demo(config: SweepDemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Runs the sweep through kfp.local and prints its results table, the best adapter and MLflow's
    location."""
    from kubetune.pipelines import autoresearch
    from kubetune.pipelines.local import run_local
    from kubetune.pipelines.report import latest_sweep, sweep_table

    console = console or Console()
    params = config.pipeline_params()
    defaults = {name: spec.default for name, spec in (autoresearch.component_spec.inputs or {}).items()}
    setting = {**defaults, **params}.get
    n = len(config.experiments)
    console.rule(f"[bold]autoresearch: {n} experiments" +
                 (f" + {config.second_round} proposed by Optuna" if config.second_round else "") +
                 ", kfp.local")
    console.print(f"SFT {setting('sft_steps')} steps per LoRA rank (shared by same-rank experiments), "
                  f"PPO {setting('ppo_steps')} steps each, "
                  f"{setting('eval_examples')} held-out examples per split")
    started = time.perf_counter()
    run = run_local("autoresearch", params, config.runs_dir, shared_server=config.shared_server,
                    log=console.print)
    report = latest_sweep(run["mlflow"], setting("mlflow_experiment"))
    seconds = time.perf_counter() - started
    console.rule("[bold]results")
    console.print(sweep_table(report))
    adapter = Path(report["best_model"] or "") / "adapter"
    console.print(f"best: [bold]{report['best']}[/]; its adapter (PEFT): {adapter}\n"
                  f"MLflow: {run['mlflow']}  →  "
                  f"mlflow ui --backend-store-uri sqlite:///{run['mlflow']}/mlflow.db "
                  f"(sweep run {report['parent_run_id']})\n"
                  f"pipeline artifacts: {run['pipeline_root']}\nsweep time: {seconds:.0f} s", soft_wrap=True)
    return {**report, "seconds": round(seconds, 1), "adapter": str(adapter), "mlflow": run["mlflow"]}


def run_sft_demo(workdir: Path, sft: dict[str, Any] | None = None, pretrain_steps: int | None = None,
                 console: Console | None = None) -> dict[str, Any]:
    """Task → tiny base model → ``run_sft`` (``sft``: SFTConfig settings; the rest its defaults) on a
    training server started here → accuracy before and after. Returns the summary (also written to
    ``workdir/summary.json``)."""
    console = console or Console()
    started = time.perf_counter()
    workdir = Path(workdir)
    sft = dict(sft or {})
    seed = sft.get("seed", 0)
    data_dir = workdir / "data"

    console.rule("[bold]1. text-to-SQL task")
    build_dataset(data_dir, seed=seed)
    stats = task_statistics(data_dir)
    console.print(stats_table(stats))

    console.rule("[bold]2. tiny Gemma-architecture base model")
    boot = _base_model(workdir / "base-model", seed, pretrain_steps, console)

    with embedded_server(str(boot.path), checkpoint_dir=workdir / "checkpoints") as server:
        config = SFTConfig(data_dir=data_dir, out_dir=workdir / "sft", base_url=server.url, **sft)
        console.rule("[bold]3. held-out execution accuracy before SFT")
        before = _base_accuracy(config)
        _print_accuracy(before, console)
        console.rule(f"[bold]4. LoRA SFT (the sft recipe): {config.steps} steps × {config.batch_size}")
        result = run_sft(config, log=console.print)
    after = result["eval"]

    console.rule("[bold]5. held-out execution accuracy after SFT")
    console.print(_comparison_table(before, after))
    summary = {
        "config": result["config"],
        "task": stats,
        "base_model": {"path": str(boot.path), "params": boot.params, "cache_hit": boot.cache_hit,
                       "pretrain_seconds": boot.build_seconds, "final_loss": boot.final_loss},
        "sft": {"steps": result["steps"], "seconds": result["seconds"]},
        "accuracy_before": {s: r["accuracy"] for s, r in before.items()},
        "accuracy_after": {s: r["accuracy"] for s, r in after.items()},
        "valid_sql_after": {s: r["valid_sql"] for s, r in after.items()},
        "adapter": result["adapter_dir"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"adapter (PEFT dir): {summary['adapter']}\nsummary: {workdir / 'summary.json'}\n"
                  f"wall time {summary['wall_seconds']:.0f} s")
    return summary


def _base_model(out_dir: Path, seed: int, pretrain_steps: int | None, console: Console):
    last = [0.0]

    def progress(step: int, loss: float) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            console.print(f"  pretraining step {step}: loss {loss:.3f}")

    extra = {"steps": pretrain_steps} if pretrain_steps is not None else {}
    boot = bootstrap_tiny_model(out_dir, pretraining_corpus(seed), seed=seed, progress=progress, **extra)
    console.print(
        f"  {boot.path}: {boot.params / 1e6:.2f} M parameters, "
        + ("cached (content hash match)" if boot.cache_hit
           else f"pretrained {boot.steps} steps in {boot.build_seconds:.0f} s")
        + f", final loss {boot.final_loss:.3f}"
    )
    return boot


def _base_accuracy(config: SFTConfig) -> dict[str, dict]:
    """The bare base model's accuracy, sampled through the server as the recipe's own evaluation is."""
    with tinker_session(config.base_url, config.api_key) as service:
        client = service.create_sampling_client(base_model=served_model(config)).result()
        return evaluate_client(client, client.get_tokenizer(), config)


def _print_accuracy(reports: dict[str, dict], console: Console) -> None:
    for split, report in reports.items():
        console.print(f"  {split:20s} exec-acc {report['accuracy']:.3f}  "
                      f"valid SQL {report['valid_sql']:.3f}  ({report['total']} examples)")


def _comparison_table(before: dict[str, dict], after: dict[str, dict]) -> Table:
    table = Table(title="held-out execution accuracy (greedy)")
    for column in ("split", "examples", "before SFT", "after SFT", "valid SQL after"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, report in after.items():
        table.add_row(split, str(report["total"]), f"{before[split]['accuracy']:.3f}",
                      f"{report['accuracy']:.3f}", f"{report['valid_sql']:.3f}")
    return table


def stats_table(stats: dict) -> Table:
    """The task's statistics: one row per split with its examples, databases, templates, wordings."""
    dbs = stats["databases"]
    table = Table(title=f"embedded text-to-SQL task: {stats['templates']} templates, "
                        f"{stats['wordings']} wordings, "
                        f"train DBs {', '.join(dbs['train'])}; held-out DB {', '.join(dbs['heldout'])}")
    for column in ("split", "examples", "databases", "templates", "wordings"):
        table.add_column(column, justify="left" if column in ("split", "databases") else "right")
    for split, info in stats["splits"].items():
        table.add_row(split, str(info["examples"]), ", ".join(info["databases"]), str(info["templates"]),
                      str(info["wordings"]))
    return table
