"""Kubeflow Pipelines components for text-to-SQL post-training: thin shims over ``kubetune.steps``.

Each is a lightweight Python component on the kubetune image (``install_kfp_package=False``, no
``packages_to_install``: the image already holds kubetune and kfp), so kfp's local
SubprocessRunner runs them in the current environment too. Docstrings become the UI's descriptions.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

KUBETUNE_IMAGE = "ghcr.io/kubetune/kubetune:0.1.0"  # images/Dockerfile; override with set_container_image


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def prepare_text2sql_data(dataset: Output[Dataset], source: str = "embedded", seed: int = 0,
                          sizes_json: str = "{}") -> None:
    """Builds the text-to-SQL dataset: the embedded generator or a Spider-format directory.

    Args:
        dataset: Output directory in Spider layout (split JSONL files and SQLite databases).
        source: "embedded" for the generated task, or the path of a Spider-format directory.
        seed: Generator seed (embedded source only).
        sizes_json: Examples per split as JSON, e.g. {"train": 200}; {} keeps the defaults.
    """
    import json

    from kubetune.steps.data import prepare_data

    stats = prepare_data(dataset.path, source=source, seed=seed, sizes=json.loads(sizes_json) or None)
    dataset.metadata.update({"source": source, "seed": seed, "splits": json.dumps(stats.get("splits", {}))})


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def prepare_base_model(model: Output[Model], reference: str = "tiny", seed: int = 0,
                       pretrain_steps: int = -1) -> None:
    """Provides the base model: bootstraps the tiny embedded model or references a real one.

    Args:
        model: Output model artifact (the tiny model's files, or a reference record).
        reference: "tiny" for the embedded model; a Hugging Face id or a directory the training
            server can read (e.g. google/gemma-3-1b-it) for a real one (never downloaded here).
        seed: Seed of the tiny model's tokenizer, weights and pretraining.
        pretrain_steps: Tiny model pretraining steps; -1 keeps the default.
    """
    from kubetune.steps.model import prepare_model

    info = prepare_model(model.path, reference=reference, seed=seed,
                         pretrain_steps=None if pretrain_steps < 0 else pretrain_steps)
    model.metadata.update({"base_model": info["base_model"]})


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def train_sft(dataset: Input[Dataset], base_model: Input[Model], model: Output[Model],
              metrics: Output[Metrics], steps: int = 400, batch_size: int = 16, learning_rate: float = 3e-3,
              lora_rank: int = 16, seed: int = 0, eval_examples: int = 100, training_api_url: str = "",
              reuse_cache: str = "") -> str:
    """Supervised LoRA fine-tuning on the train split's prompt → SQL pairs.

    Args:
        dataset: Dataset from prepare_text2sql_data.
        base_model: Base model from prepare_base_model.
        model: Output: the adapter (PEFT directory), the run's logs and its training state.
        metrics: Output: held-out execution accuracy and training time.
        steps: Optimizer steps.
        batch_size: Prompt → SQL pairs per step.
        learning_rate: Peak learning rate (warmup, then cosine decay).
        lora_rank: LoRA rank.
        seed: Seed of batches and adapter initialisation.
        eval_examples: Held-out examples per split evaluated at the end (0: none).
        training_api_url: A shared kubetune training server; empty starts one inside this step.
        reuse_cache: Directory of finished runs kept by content (settings, dataset, base model, server):
            an identical run copies the earlier result instead of training, so sweep branches share
            one warm start per LoRA rank. "auto": $KUBETUNE_HOME/reuse; empty: always train.

    Returns:
        The tinker:// path of the final training state.
    """
    from kubetune.steps.train import train_component

    return train_component("sft", dataset, base_model, model, metrics, training_api_url,
                           dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                                lora_rank=lora_rank, seed=seed, eval_examples=eval_examples),
                           reuse_dir=reuse_cache)


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def train_ppo(dataset: Input[Dataset], init_model: Input[Model], model: Output[Model],
              metrics: Output[Metrics], steps: int = 150, prompts_per_step: int = 4, group_size: int = 8,
              learning_rate: float = 2e-4, kl_coef: float = 0.0, reward: str = "execution", seed: int = 0,
              eval_examples: int = 100, training_api_url: str = "") -> str:
    """GRPO-style RL on the rl split's prompts: G samples each, group-normalised execution rewards.

    Args:
        dataset: Dataset from prepare_text2sql_data.
        init_model: Model to continue from (the SFT step's output) or a base model.
        model: Output: the adapter (PEFT directory), the run's logs and its training state.
        metrics: Output: held-out execution accuracy and training time.
        steps: RL steps.
        prompts_per_step: Prompts sampled per step.
        group_size: Samples per prompt.
        learning_rate: Constant learning rate.
        kl_coef: KL penalty towards the base model (adapter off); 0 disables it.
        reward: execution, shaped or format.
        seed: Seed of prompt order and sampling.
        eval_examples: Held-out examples per split evaluated at the end (0: none).
        training_api_url: A shared kubetune training server; empty starts one inside this step.

    Returns:
        The tinker:// path of the final training state.
    """
    from kubetune.steps.train import train_component

    return train_component("ppo", dataset, init_model, model, metrics, training_api_url,
                           dict(steps=steps, prompts_per_step=prompts_per_step, group_size=group_size,
                                learning_rate=learning_rate, kl_coef=kl_coef, reward=reward, seed=seed,
                                eval_examples=eval_examples))


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def train_dpo(dataset: Input[Dataset], init_model: Input[Model], model: Output[Model],
              metrics: Output[Metrics], steps: int = 60, batch_size: int = 8, learning_rate: float = 3e-4,
              beta: float = 0.5, nll_weight: float = 1.0, pair_prompts: int = 200, gold_fallback: bool = True,
              seed: int = 0, eval_examples: int = 100, training_api_url: str = "") -> str:
    """DPO on preference pairs from the starting policy's own samples (chosen = executes correctly).

    Args:
        dataset: Dataset from prepare_text2sql_data.
        init_model: Model to continue from (the SFT step's output) or a base model.
        model: Output: the adapter (PEFT directory), the run's logs and its training state.
        metrics: Output: held-out execution accuracy and training time.
        steps: Optimizer steps.
        batch_size: Preference pairs per step.
        learning_rate: Constant learning rate.
        beta: DPO temperature.
        nll_weight: Weight of the chosen answers' NLL (RPO); 0 for plain DPO.
        pair_prompts: rl-split prompts sampled to build pairs.
        gold_fallback: Use the gold SQL as chosen when no sample of a prompt is correct.
        seed: Seed of sampling and batch order.
        eval_examples: Held-out examples per split evaluated at the end (0: none).
        training_api_url: A shared kubetune training server; empty starts one inside this step.

    Returns:
        The tinker:// path of the final training state.
    """
    from kubetune.steps.train import train_component

    return train_component("dpo", dataset, init_model, model, metrics, training_api_url,
                           dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate, beta=beta,
                                nll_weight=nll_weight, pair_prompts=pair_prompts, gold_fallback=gold_fallback,
                                seed=seed, eval_examples=eval_examples))


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def evaluate_text2sql(dataset: Input[Dataset], model: Input[Model], metrics: Output[Metrics],
                      report: Output[Markdown],
                      splits: str = "heldout_values,heldout_paraphrase,heldout_database",
                      examples: int = 100, training_api_url: str = "") -> float:
    """Greedy execution accuracy of a trained adapter, with a Markdown report the UI renders.

    Args:
        dataset: Dataset from prepare_text2sql_data.
        model: A trained model artifact (output of train_sft, train_ppo or train_dpo).
        metrics: Output: accuracy and valid-SQL rate per split.
        report: Output: the results as a Markdown table.
        splits: Comma-separated splits to evaluate.
        examples: Evaluate the first N examples of each split.
        training_api_url: The kubetune server that trained the model: generate there, on its GPU;
            empty loads the base model and adapter in this step.

    Returns:
        Execution accuracy on heldout_paraphrase if evaluated, else on the first split.
    """
    import os

    from kubetune.steps.evaluate import evaluate

    chosen = [s.strip() for s in splits.split(",") if s.strip()]
    result = evaluate(dataset.path, model.path, chosen, examples, training_api_url=training_api_url,
                      api_key=os.environ.get("TINKER_API_KEY", "tml-local"))
    for split, r in result["splits"].items():
        metrics.log_metric(f"{split}/accuracy", r["accuracy"])
        metrics.log_metric(f"{split}/valid_sql", r["valid_sql"])
    with open(report.path, "w") as f:
        f.write(result["markdown"])
    key = "heldout_paraphrase" if "heldout_paraphrase" in result["splits"] else chosen[0]
    return float(result["splits"][key]["accuracy"])


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def log_to_mlflow(model: Input[Model], training_metrics: Input[Metrics], evaluation: Input[Metrics],
                  report: Input[Markdown], tracking_uri: str = "", experiment: str = "kubetune-text2sql",
                  run_name: str = "", register_name: str = "", parent_run_id: str = "") -> str:
    """Logs a trained adapter to MLflow: config as params, training and evaluation metrics, the adapter,
    its training log and report as artifacts, and (optionally) a model registry version.

    Args:
        model: A trained model artifact (output of a training step).
        training_metrics: The training step's metrics.
        evaluation: The evaluate_text2sql step's metrics.
        report: The evaluate_text2sql step's Markdown report.
        tracking_uri: MLflow tracking URI (http://mlflow:5000 on a cluster); empty: a local store
            under runs/mlflow that `mlflow ui --backend-store-uri sqlite:///runs/mlflow/mlflow.db` opens.
        experiment: MLflow experiment name.
        run_name: MLflow run name; empty: the recipe's name.
        register_name: Registered model name for the adapter; empty: do not register.
        parent_run_id: Make this run a child of that run (sweeps).

    Returns:
        The MLflow run id.
    """
    from kubetune.steps.track import log_to_mlflow as log

    metrics = {**{f"train/{k}": v for k, v in training_metrics.metadata.items()
                  if isinstance(v, int | float)},
               **{k: v for k, v in evaluation.metadata.items() if isinstance(v, int | float)}}
    return log(model.path, metrics, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
               register_name=register_name, parent_run_id=parent_run_id, report=report.path)


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def select_best(experiments: list, scores: list, models: Input[list[Model]], run_ids: list,
                best_model: Output[Model], comparison: Output[Markdown],
                metric: str = "heldout_paraphrase/accuracy", tracking_uri: str = "",
                experiment: str = "kubetune-text2sql", sweep_name: str = "autoresearch",
                previous: str = "", previous_best: Input[Model] = None) -> str:
    """Fan-in of a sweep: picks the experiment with the best held-out score, copies its model, and
    opens the sweep's parent MLflow run holding the experiments' runs, a comparison table and plot.

    Args:
        experiments: The sweep's experiment configs (dicts with a run_name), in loop order.
        scores: Their held-out scores, collected from the loop (loop order).
        models: Their trained model artifacts, collected from the loop (loop order).
        run_ids: The experiments' MLflow runs (loop order); empty: log nothing to MLflow.
        best_model: Output: a copy of the winning model artifact.
        comparison: Output: the ranking as a Markdown table.
        metric: Name of the score, for the table and MLflow.
        tracking_uri: MLflow tracking URI; empty: the local store under runs/mlflow.
        experiment: MLflow experiment name.
        sweep_name: Name of the parent run.
        previous: An earlier round's summary (this component's output): rank both rounds together
            and log into that round's parent run.
        previous_best: The earlier round's best_model, the winner if no new experiment beats it.

    Returns:
        The sweep's summary as JSON: best experiment, score, parent run, every result.
    """
    import json
    import os
    import shutil

    from kubetune.steps.track import select_best as pick

    plot = os.path.join(os.path.dirname(comparison.path), "comparison.png")
    names = [str(e.get("run_name", f"experiment-{i}")) for i, e in enumerate(experiments)]
    result = pick(names, [float(s) for s in scores], [m.path for m in models], metric=metric,
                  run_ids=[str(r) for r in run_ids], experiments=list(experiments), tracking_uri=tracking_uri,
                  experiment=experiment, sweep_name=sweep_name, plot_path=plot,
                  previous=json.loads(previous) if previous else None,
                  previous_best_dir=previous_best.path if previous_best is not None else None,
                  best_model_uri=best_model.uri)
    best_model.metadata["sweep_run_id"] = result["parent_run_id"]
    shutil.copytree(result["model_dir"], best_model.path, dirs_exist_ok=True)
    best_model.metadata.update({"experiment": result["name"], "score": result["score"]})
    with open(comparison.path, "w") as f:
        f.write(result["table"])
    return json.dumps({k: result[k]
                       for k in ("name", "score", "parent_run_id", "round", "metric", "results")})


@dsl.component(base_image=KUBETUNE_IMAGE, install_kfp_package=False)
def propose_experiments(summary: str, count: int = 2, seed: int = 0) -> list:
    """A sweep's next round: new experiment configs proposed from the finished ones (Optuna TPE,
    ask/tell over their held-out scores).

    Args:
        summary: select_best's output for the finished round(s).
        count: How many configs to propose.
        seed: Seed of the sampler (the same results and seed propose the same configs).

    Returns:
        Experiment configs (dicts with run_name, learning_rate, lora_rank, kl_coef, group_size, reward).
    """
    import json

    from kubetune.steps.propose import propose_experiments as propose

    finished = json.loads(summary)
    return propose(finished["results"], count, seed=seed, prefix=f"round{finished['round'] + 1}")
