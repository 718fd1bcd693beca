"""The pipeline steps: what each Kubeflow component does, as plain functions over directories.

Components in ``kubetune.components`` (imported only where pipelines are defined, never inside a component body) are thin shims that hand these functions their artifact
paths. The data path runs one way through artifacts: dataset dir → base model dir → trained model
dir (PEFT adapter, the training run's checkpoint store, ``kubetune-model.json``) → evaluation.
A training step that continues from an earlier one (PPO or DPO after SFT) reads the earlier model
artifact: with an embedded server it copies that artifact's checkpoint store into its own, so the
``tinker://`` state path stays valid; with a shared server the path already is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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
        # "reference": what a shared training server knows this model as (it built its own copy).
        info = {"kind": "base", "base_model": str(out_dir), "reference": reference, "params": boot.params,
                "pretrain_steps": boot.steps}
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
    # A shared server names the tiny model by its reference: the copy in this artifact is not its path.
    base_model = source.get("reference", source["base_model"]) if training_api_url else source["base_model"]
    config = config_cls(data_dir=Path(data_dir), out_dir=out_dir / "run", base_url=training_api_url or None,
                        base_model=base_model, api_key=api_key, checkpoint_dir=checkpoints, **params)
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


def directory_digest(path: str | Path) -> str:
    """sha256 over every file's relative path and bytes under ``path`` (sorted; the directory's content)."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def train_reusing(reuse_dir: str | Path, recipe: str, data_dir: str | Path, model_dir: str | Path,
                  out_dir: str | Path, *, training_api_url: str = "", api_key: str = "tml-local",
                  params: dict[str, Any] | None = None, log=print) -> dict[str, Any]:
    """``train``, unless an identical run finished before under ``reuse_dir``: then its model artifact is
    copied. Identical means the same recipe settings, dataset bytes, starting-model bytes and server,
    so the copy is what training would produce (runs are seeded). This is how a sweep's branches share
    one SFT warm start per LoRA rank. Concurrent identical runs wait for the first (a file lock) rather
    than train twice. ``reuse_dir`` ``"auto"``: ``$KUBETUNE_HOME/reuse``."""
    from .file_lock import exclusive
    from .models.reference import kubetune_home

    root = kubetune_home() / "reuse" if str(reuse_dir) == "auto" else Path(reuse_dir)
    identity = {"recipe": recipe, "params": params or {}, "training_api_url": training_api_url,
                "dataset": directory_digest(data_dir), "model": directory_digest(model_dir)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]
    entry = root / f"{recipe}-{key}"
    with exclusive(root / f"{recipe}-{key}.lock"):
        if (entry / MODEL_INFO).is_file():
            log(f"reusing the identical {recipe} run in {entry}")
            shutil.copytree(entry, out_dir, dirs_exist_ok=True)
            return {**read_model_info(out_dir), "reused_from": str(entry)}
        info = train(recipe, data_dir, model_dir, out_dir, training_api_url=training_api_url, api_key=api_key,
                     params=params, log=log)
        partial = root / f".{entry.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(out_dir, partial)
        partial.rename(entry)  # whole or absent: a crash mid-copy never leaves a half entry to reuse
    return info


def evaluate(data_dir: str | Path, model_dir: str | Path, splits: list[str], examples: int, *,
             training_api_url: str = "", api_key: str = "tml-local") -> dict[str, Any]:
    """Greedy execution accuracy of a trained model artifact's adapter on each split, with a
    per-template breakdown; returns ``{"splits": {split: report}, "markdown": str}``.

    With ``training_api_url`` the completions come from that server (the artifact's saved sampler
    weights; the accelerator is there), otherwise from an engine loaded in this process."""
    from .evaluate import evaluate_examples
    from .tasks.text2sql import load_split

    info = read_model_info(model_dir)
    selected = {split: load_split(data_dir, split)[:examples] for split in splits}
    empty = [split for split, chosen in selected.items() if not chosen]
    if empty:
        raise ValueError(f"split(s) {', '.join(empty)} of {data_dir} have no examples")
    reports = {}
    with _generator(info, Path(model_dir), training_api_url, api_key) as generate:
        for split, chosen in selected.items():
            report = evaluate_examples(generate, chosen, data_dir)
            reports[split] = {k: report[k] for k in ("accuracy", "valid_sql", "total", "correct") if k in report}
            reports[split]["per_template"] = report.get("per_template", {})
    return {"splits": reports, "markdown": markdown_report(info, reports)}


@contextmanager
def _generator(info: dict[str, Any], model_dir: Path, training_api_url: str, api_key: str) -> Iterator[Any]:
    """Greedy SQL generation for a model artifact: through a training server, or a local engine."""
    if training_api_url and info.get("sampler_path"):
        from .recipes.common import Endpoint, sampler_generator, tinker_session

        with tinker_session(Endpoint(training_api_url, info["base_model"], None), api_key) as service:
            client = service.create_sampling_client(model_path=info["sampler_path"]).result()
            yield sampler_generator(client, client.get_tokenizer())
        return
    from .evaluate import local_generator

    adapter = model_dir / info["adapter"] if info.get("adapter") else None
    if info["kind"] == "trained" and adapter is None:
        raise ValueError(f"{model_dir} holds no local adapter; pass the training_api_url of the server that "
                         "trained it")
    yield local_generator(adapter, info["base_model"])


def markdown_report(info: dict[str, Any], reports: dict[str, dict]) -> str:
    lines = [f"# Execution accuracy: {info.get('recipe', 'base model')}", "",
             f"Base model `{info['base_model']}`" + (f", {info['steps']} steps" if "steps" in info else "") + ".", "",
             "| split | examples | execution accuracy | valid SQL |", "|---|---|---|---|"]
    for split, r in reports.items():
        lines.append(f"| {split} | {r['total']} | {r['accuracy']:.3f} | {r['valid_sql']:.3f} |")
    return "\n".join(lines) + "\n"


def train_component(recipe: str, dataset, init_model, model, metrics, training_api_url: str,
                    params: dict[str, Any], reuse_dir: str = "") -> str:
    """A training component's whole body: train from the input artifacts (or reuse an identical run,
    see ``train_reusing``), fill the output ones (the API key comes from ``TINKER_API_KEY``, a
    Kubernetes Secret on a cluster). Returns the state's path."""
    import os

    kwargs = {"training_api_url": training_api_url, "api_key": os.environ.get("TINKER_API_KEY", "tml-local"),
              "params": params}
    if reuse_dir:
        info = train_reusing(reuse_dir, recipe, dataset.path, init_model.path, model.path, **kwargs)
    else:
        info = train(recipe, dataset.path, init_model.path, model.path, **kwargs)
    return record_training(info, model, metrics)


def record_training(info: dict[str, Any], model, metrics) -> str:
    """Copies a training step's results onto its KFP artifacts (``Output[Model]``,
    ``Output[Metrics]``); returns the final state's tinker path."""
    model.metadata.update({k: info[k] for k in ("recipe", "base_model", "state_path", "sampler_path") if info.get(k)})
    model.metadata["framework"] = "peft"
    if info.get("reused_from"):
        model.metadata["reused_from"] = info["reused_from"]
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
                plot_path: str | Path | None = None, previous: dict[str, Any] | None = None,
                previous_best_dir: str | Path | None = None, best_model_uri: str = "") -> dict[str, Any]:
    """Picks the experiment with the highest score (ties: the earlier one) and writes a comparison
    table (Markdown) and bar plot (PNG). With ``run_ids`` (the experiments' MLflow runs) it opens the
    sweep's parent run, makes those runs its children and logs the comparison there.

    ``previous`` is an earlier round's summary (what this returns) and ``previous_best_dir`` that
    round's winning model: the ranking then covers both rounds, and the new runs join the earlier
    round's parent run. ``best_model_uri`` (where the winner's copy goes) is tagged on the parent."""
    if not (len(names) == len(scores) == len(model_dirs)) or not names:
        raise ValueError(f"select_best needs one name, score and model per experiment; got {len(names)}, "
                         f"{len(scores)}, {len(model_dirs)}")
    # KFP carries numbers in protobuf Structs, so a config's ints arrive as floats (4 → 4.0).
    experiments = [{k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in e.items()}
                   for e in experiments] if experiments else [{"run_name": name} for name in names]
    round_ = (previous or {}).get("round", 0) + 1
    earlier = list((previous or {}).get("results", []))
    results = earlier + [{"run_name": name, "score": float(score), "config": config, "round": round_,
                          "run_id": (run_ids or [""] * len(names))[i]}
                         for i, (name, score, config) in enumerate(zip(names, scores, experiments, strict=True))]
    dirs = [str(previous_best_dir) if previous and r["run_name"] == previous["name"] else None for r in earlier]
    dirs += [str(d) for d in model_dirs]
    best = max(range(len(results)), key=lambda i: (results[i]["score"], -i))
    order = sorted(range(len(results)), key=lambda i: (-results[i]["score"], i))
    table = "\n".join([f"| rank | experiment | round | {metric} |", "|---|---|---|---|",
                       *(f"| {rank} | {results[i]['run_name']}{' (best)' if i == best else ''} | {results[i]['round']} "
                         f"| {results[i]['score']:.3f} |" for rank, i in enumerate(order, 1))]) + "\n"
    if plot_path is not None:
        _bar_plot([r["run_name"] for r in results], [r["score"] for r in results], best, metric, Path(plot_path))
    parent = (previous or {}).get("parent_run_id", "")
    if run_ids:
        from .tracking import log_run, set_parent

        artifacts = {"": plot_path} if plot_path else {}
        parent = log_run(tracking_uri, experiment, sweep_name, run_id=parent or None, params={
            f"round{round_}_experiments": experiments, f"round{round_}_n_experiments": len(names),
            f"round{round_}_best_experiment": results[best]["run_name"]},
            metrics={f"best/{metric}": results[best]["score"], "rounds": round_}, artifacts=artifacts,
            texts={"comparison.md": table}, tags={"kubetune.sweep": "parent", "best_experiment": results[best]["run_name"],
                                                   "kubetune.best_model": best_model_uri})
        set_parent(tracking_uri, list(run_ids), parent)
    return {"best": best, "name": results[best]["run_name"], "score": results[best]["score"], "model_dir": dirs[best],
            "table": table, "parent_run_id": parent, "results": results, "round": round_, "metric": metric}


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
