"""``make demo``: the autoresearch pipeline on this machine, on the embedded default.

kfp's local runner executes the same pipeline a cluster runs (data → base model → per experiment
SFT → PPO → evaluate → MLflow child run → select_best), every step a subprocess in this
environment. As on a cluster, the experiments' training steps are clients of one shared training
server (started here, serving the tiny base model), which packs them onto the one engine: steps
that each started their own would hold a model apiece and fight over the same cores (two PPO
steps side by side ran 6× slower per step than one alone on 2 cores). The results are read back
from the MLflow store the steps wrote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console


def _default_experiments() -> list[dict[str, Any]]:
    from kubetune.pipelines.autoresearch import DEFAULT_EXPERIMENTS

    return [dict(e) for e in DEFAULT_EXPERIMENTS]


@dataclass
class SweepDemoConfig:
    runs_dir: Path = Path("runs")
    experiments: list[dict[str, Any]] = field(default_factory=_default_experiments)
    second_round: int = 1  # Optuna-proposed experiments after the first round (each ~3 min here)
    sft_steps: int = 400
    ppo_steps: int = 60
    prompts_per_step: int = 4
    eval_examples: int = 100
    seed: int = 0
    mlflow_experiment: str = "kubetune-autoresearch"
    reuse_cache: str = "auto"  # identical SFT runs trained once ($KUBETUNE_HOME/reuse)
    data_sizes_json: str = "{}"  # examples per split; {} is the task's full size
    pretrain_steps: int = -1  # tiny base model pretraining; -1 the bootstrap's default
    shared_server: bool = True  # one training server for every step (False: each step starts its own)

    def pipeline_params(self) -> dict[str, Any]:
        return {"experiments": self.experiments, "second_round": self.second_round, "sft_steps": self.sft_steps,
                "ppo_steps": self.ppo_steps, "prompts_per_step": self.prompts_per_step,
                "eval_examples": self.eval_examples, "seed": self.seed, "mlflow_experiment": self.mlflow_experiment,
                "reuse_cache": self.reuse_cache, "data_sizes_json": self.data_sizes_json,
                "pretrain_steps": self.pretrain_steps}


def run_sweep_demo(config: SweepDemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Runs the sweep through kfp.local and prints its results table, the best adapter and MLflow's location."""
    from .pipeline_runs import run_local
    from .sweep_report import latest_sweep, sweep_table

    console = console or Console()
    n = len(config.experiments)
    console.rule(f"[bold]autoresearch: {n} experiments" +
                 (f" + {config.second_round} proposed by Optuna" if config.second_round else "") + ", kfp.local")
    console.print(f"SFT {config.sft_steps} steps per LoRA rank (shared by same-rank experiments), PPO "
                  f"{config.ppo_steps} steps each, {config.eval_examples} held-out examples per split")
    started = time.perf_counter()
    run = run_local("autoresearch", config.pipeline_params(), config.runs_dir, shared_server=config.shared_server,
                    log=console.print)
    report = latest_sweep(run["mlflow"], config.mlflow_experiment)
    seconds = time.perf_counter() - started
    console.rule("[bold]results")
    console.print(sweep_table(report))
    adapter = Path(report["best_model"] or "") / "adapter"
    console.print(f"best: [bold]{report['best']}[/]; its adapter (PEFT): {adapter}\n"
                  f"MLflow: {run['mlflow']}  →  mlflow ui --backend-store-uri sqlite:///{run['mlflow']}/mlflow.db "
                  f"(sweep run {report['parent_run_id']})\n"
                  f"pipeline artifacts: {run['pipeline_root']}\nsweep time: {seconds:.0f} s", soft_wrap=True)
    return {**report, "seconds": round(seconds, 1), "adapter": str(adapter), "mlflow": run["mlflow"]}
