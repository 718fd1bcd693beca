"""The pipeline steps: what each Kubeflow component does, as plain functions over directories.

Components in ``kubetune.components`` (imported only where pipelines are defined, never inside a component body) are thin shims that hand these functions their artifact
paths. The data path runs one way through artifacts: dataset dir → base model dir → trained model
dir (PEFT adapter, the training run's checkpoint store, ``kubetune-model.json``) → evaluation.
A training step that continues from an earlier one (PPO or DPO after SFT) reads the earlier model
artifact: with an embedded server it copies that artifact's checkpoint store into its own, so the
``tinker://`` state path stays valid; with a shared server the path already is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

MODEL_INFO = "kubetune-model.json"  # in every model artifact: what it is and where its state lives
RECIPES = ("sft", "ppo", "dpo")


def prepare_data(out_dir: str | Path, source: str = "embedded", seed: int = 0,
                 sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """The embedded text-to-SQL task (``source="embedded"``) or a copy of a Spider-format directory.

    Returns the task statistics (examples per split, databases, templates).
    """
    from .tasks.text2sql import build_dataset, load_spider, task_statistics

    out_dir = Path(out_dir)
    if source == "embedded":
        build_dataset(out_dir, seed=seed, sizes=sizes)
        return task_statistics(out_dir)
    source_dir = Path(source)
    if not source_dir.is_dir():
        raise ValueError(f"data source {source!r} is neither 'embedded' nor a Spider-format directory")
    load_spider(source_dir)  # validates the layout before anything is copied
    shutil.copytree(source_dir, out_dir, dirs_exist_ok=True)
    return {"source": str(source_dir)}


def prepare_model(out_dir: str | Path, reference: str = "tiny", seed: int = 0,
                  pretrain_steps: int | None = None) -> dict[str, Any]:
    """``tiny``: bootstrap the embedded model into ``out_dir``. Anything else (a Hub id, a local
    directory) is recorded by reference only; the training server loads it."""
    from .models.bootstrap import bootstrap_tiny_model
    from .models.reference import TINY_REFS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if reference in TINY_REFS:
        extra = {"steps": pretrain_steps} if pretrain_steps is not None else {}
        boot = bootstrap_tiny_model(out_dir, seed=seed, **extra)
        info = {"kind": "base", "base_model": str(out_dir), "params": boot.params, "pretrain_steps": boot.steps}
    else:
        info = {"kind": "base", "base_model": reference}
    (out_dir / MODEL_INFO).write_text(json.dumps(info, indent=2))
    return info


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_INFO
    if not path.is_file():
        raise ValueError(f"{model_dir} is not a kubetune model artifact (no {MODEL_INFO}); pass the output of "
                         "prepare_base_model or of a training step")
    return json.loads(path.read_text())


def train(recipe: str, data_dir: str | Path, model_dir: str | Path, out_dir: str | Path, *,
          training_api_url: str = "", api_key: str = "tml-local", params: dict[str, Any] | None = None,
          log=print) -> dict[str, Any]:
    """Runs one recipe and turns its output into a model artifact in ``out_dir``.

    Args:
        recipe: ``sft``, ``ppo`` or ``dpo``.
        data_dir: a dataset artifact (Spider layout).
        model_dir: the base model artifact, or a trained model artifact to continue from (its state
            is the starting point; its base model is used).
        out_dir: the output model artifact: ``adapter/`` (PEFT directory), ``run/`` (metrics.jsonl,
            result.json), ``checkpoints/`` (embedded runs) and ``kubetune-model.json``.
        training_api_url: a shared kubetune server; empty starts an embedded one in this process.
        api_key: the key for that server.
        params: recipe settings (fields of SFTConfig / PPOConfig / DPOConfig).

    Returns:
        The model info written to ``kubetune-model.json`` (includes ``eval`` and ``seconds``).
    """
    from . import recipes

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    params = dict(params or {})
    source = read_model_info(model_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = out_dir / "checkpoints"
    if source["kind"] == "trained":
        if recipe == "sft":
            params.setdefault("init_state", None)
        else:
            params["init_state"] = source["state_path"]
        if not training_api_url and (Path(model_dir) / "checkpoints").is_dir():
            shutil.copytree(Path(model_dir) / "checkpoints", checkpoints, dirs_exist_ok=True)
    config_cls, run = {"sft": (recipes.SFTConfig, recipes.run_sft), "ppo": (recipes.PPOConfig, recipes.run_ppo),
                       "dpo": (recipes.DPOConfig, recipes.run_dpo)}[recipe]
    if recipe == "sft":
        params.pop("init_state", None)
    config = config_cls(data_dir=Path(data_dir), out_dir=out_dir / "run", base_url=training_api_url or None,
                        base_model=source["base_model"], api_key=api_key, checkpoint_dir=checkpoints, **params)
    result = run(config, log=log)
    if result["adapter_dir"]:
        shutil.copytree(result["adapter_dir"], out_dir / "adapter", dirs_exist_ok=True)
    # The adapter's rank is set where it was created; a run that continues from a state keeps it.
    continued = source["kind"] == "trained" and recipe != "sft"
    lora_rank = source.get("lora_rank") if continued else config.lora_rank
    info = {"kind": "trained", "recipe": recipe, "base_model": source["base_model"], "lora_rank": lora_rank,
            "state_path": result["state_path"], "sampler_path": result["sampler_path"],
            "adapter": "adapter" if result["adapter_dir"] else None, "training_api_url": training_api_url,
            "eval": result["eval"], "seconds": result["seconds"], "steps": result["steps"]}
    (out_dir / MODEL_INFO).write_text(json.dumps(info, indent=2))
    return info


def evaluate(data_dir: str | Path, model_dir: str | Path, splits: list[str], examples: int) -> dict[str, Any]:
    """Greedy execution accuracy of a trained model artifact's adapter on each split, with a
    per-template breakdown; returns ``{"splits": {split: report}, "markdown": str}``."""
    from .evaluate import evaluate_adapter

    info = read_model_info(model_dir)
    adapter = Path(model_dir) / info["adapter"] if info.get("adapter") else None
    if info["kind"] == "trained" and adapter is None:
        raise ValueError(f"{model_dir} holds no local adapter (trained on a shared server); evaluate it there")
    reports = {}
    for split in splits:
        report = evaluate_adapter(data_dir, split, adapter=adapter, base_model=info["base_model"], examples=examples)
        reports[split] = {k: report[k] for k in ("accuracy", "valid_sql", "total", "correct") if k in report}
        reports[split]["per_template"] = report.get("per_template", {})
    return {"splits": reports, "markdown": markdown_report(info, reports)}


def markdown_report(info: dict[str, Any], reports: dict[str, dict]) -> str:
    lines = [f"# Execution accuracy: {info.get('recipe', 'base model')}", "",
             f"Base model `{info['base_model']}`" + (f", {info['steps']} steps" if "steps" in info else "") + ".", "",
             "| split | examples | execution accuracy | valid SQL |", "|---|---|---|---|"]
    for split, r in reports.items():
        lines.append(f"| {split} | {r['total']} | {r['accuracy']:.3f} | {r['valid_sql']:.3f} |")
    return "\n".join(lines) + "\n"


def train_component(recipe: str, dataset, init_model, model, metrics, training_api_url: str,
                    params: dict[str, Any]) -> str:
    """A training component's whole body: train from the input artifacts, fill the output ones (the API
    key comes from ``TINKER_API_KEY``, a Kubernetes Secret on a cluster). Returns the state's path."""
    import os

    info = train(recipe, dataset.path, init_model.path, model.path, training_api_url=training_api_url,
                 api_key=os.environ.get("TINKER_API_KEY", "tml-local"), params=params)
    return record_training(info, model, metrics)


def record_training(info: dict[str, Any], model, metrics) -> str:
    """Copies a training step's results onto its KFP artifacts (``Output[Model]``,
    ``Output[Metrics]``); returns the final state's tinker path."""
    model.metadata.update({k: info[k] for k in ("recipe", "base_model", "state_path", "sampler_path") if info.get(k)})
    model.metadata["framework"] = "peft"
    metrics.log_metric("train_seconds", float(info["seconds"]))
    metrics.log_metric("steps", float(info["steps"]))
    for split, report in (info.get("eval") or {}).items():
        metrics.log_metric(f"{split}/accuracy", float(report["accuracy"]))
        metrics.log_metric(f"{split}/valid_sql", float(report["valid_sql"]))
    return info["state_path"]


def log_to_mlflow(model_dir: str | Path, metrics: dict[str, float], *, tracking_uri: str = "",
                  experiment: str = "kubetune-text2sql", run_name: str = "", register_name: str = "",
                  parent_run_id: str = "", report: str | Path | None = None) -> str:
    """One MLflow run for a trained model artifact: its recipe config as params, ``metrics``, the
    adapter, the training log and the report as artifacts; optionally a registry version. Returns
    the run id."""
    from .tracking import log_run

    info = read_model_info(model_dir)
    model_dir = Path(model_dir)
    result_path = model_dir / "run" / "result.json"
    config = json.loads(result_path.read_text())["config"] if result_path.is_file() else {}
    params = {**{k: v for k, v in config.items() if k not in ("data_dir", "out_dir", "checkpoint_dir", "api_key")},
              "recipe": info.get("recipe", "base"), "base_model": info["base_model"]}
    if info.get("lora_rank") is not None:
        params["lora_rank"] = info["lora_rank"]  # the adapter's, not a continued run's unused setting
    artifacts: dict[str, str | Path] = {"training": model_dir / "run"}
    if info.get("adapter"):
        artifacts["adapter"] = model_dir / info["adapter"]
    if report is not None:
        artifacts["report"] = report
    return log_run(tracking_uri, experiment, run_name or f"{info.get('recipe', 'model')}", params=params,
                   metrics=metrics, artifacts=artifacts, parent_run_id=parent_run_id or None,
                   register_as=(register_name or None) if info.get("adapter") else None,
                   tags={"kubetune.state_path": info.get("state_path", "")})


def select_best(names: list[str], scores: list[float], model_dirs: list[str], *, metric: str,
                run_ids: list[str] | None = None, experiments: list[dict[str, Any]] | None = None,
                tracking_uri: str = "", experiment: str = "kubetune-text2sql", sweep_name: str = "autoresearch",
                plot_path: str | Path | None = None) -> dict[str, Any]:
    """Picks the experiment with the highest score (ties: the earlier one) and writes a comparison
    table (Markdown) and bar plot (PNG). With ``run_ids`` (the experiments' MLflow runs) it opens the
    sweep's parent run, makes those runs its children and logs the comparison there."""
    if not (len(names) == len(scores) == len(model_dirs)) or not names:
        raise ValueError(f"select_best needs one name, score and model per experiment; got {len(names)}, "
                         f"{len(scores)}, {len(model_dirs)}")
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    table = "\n".join([f"| rank | experiment | {metric} |", "|---|---|---|",
                       *(f"| {rank} | {names[i]}{' (best)' if i == best else ''} | {scores[i]:.3f} |"
                         for rank, i in enumerate(order, 1))]) + "\n"
    if plot_path is not None:
        _bar_plot(names, scores, best, metric, Path(plot_path))
    parent = ""
    if run_ids:
        from .tracking import log_run, set_parent

        artifacts = {"": plot_path} if plot_path else {}
        parent = log_run(tracking_uri, experiment, sweep_name, params={
            "experiments": experiments or names, "n_experiments": len(names), "best_experiment": names[best]},
            metrics={f"best/{metric}": scores[best]}, artifacts=artifacts, texts={"comparison.md": table},
            tags={"kubetune.sweep": "parent"})
        set_parent(tracking_uri, list(run_ids), parent)
    return {"best": best, "name": names[best], "score": scores[best], "model_dir": model_dirs[best], "table": table,
            "parent_run_id": parent}


def _bar_plot(names: list[str], scores: list[float], best: int, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3))
    ax.bar(names, scores, color=["tab:green" if i == best else "tab:gray" for i in range(len(names))])
    ax.set_ylabel(metric)
    ax.set_ylim(0, max(1.0, max(scores)))
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
