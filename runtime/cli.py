"""``kubetune``: the command line (typer + rich)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import typer
from rich.console import Console

from .recipes import DPOConfig, PPOConfig, SFTConfig

app = typer.Typer(help="kubetune: LoRA RL post-training of LLMs on Kubeflow, with a Tinker-compatible API.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
model_app = typer.Typer(help="Base models: bootstrap the embedded tiny model, resolve references.",
                        no_args_is_help=True)
data_app = typer.Typer(help="Datasets: build the embedded text-to-SQL task.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Recipes: training loops that drive a model through the Tinker API.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
pipelines_app = typer.Typer(help="Kubeflow pipelines: compile them for a cluster.", no_args_is_help=True)
app.add_typer(pipelines_app, name="pipelines")
console = Console(emoji=False)  # tinker paths contain ":train:", which rich would turn into an emoji


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    # Adapters with an lm_head LoRA on tied embeddings are loaded unmerged here (docs/engine.md).
    warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True`")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@model_app.command("bootstrap")
def model_bootstrap(
    out: Path = typer.Option(..., "--out", help="Directory for the model (reused when its content hash "
                                                "matches)."),
    seed: int = typer.Option(0, help="Seed for data, tokenizer and weights."),
    force: bool = typer.Option(False, help="Rebuild even if a matching model exists."),
) -> None:
    """Build the tiny Gemma-architecture model: local tokenizer + pretraining on the task's own corpus."""
    from .models.bootstrap import bootstrap_tiny_model
    from .tasks.text2sql import pretraining_corpus

    with console.status("pretraining the tiny model…"):
        result = bootstrap_tiny_model(out, pretraining_corpus(seed), seed=seed, force=force)
    console.print(f"[green]{'cached' if result.cache_hit else 'built'}[/] {result.path}: "
                  f"{result.params / 1e6:.2f} M params, {result.steps} steps, "
                  f"final loss {result.final_loss:.3f}, "
                  f"{result.seconds:.1f} s (content hash {result.content_hash[:12]})")


@data_app.command("build")
def data_build(
    out: Path = typer.Option(..., "--out", help="Output directory (JSONL splits + Spider-layout databases)."),
    seed: int = typer.Option(0, help="Generator seed: the same seed gives byte-identical data."),
) -> None:
    """Generate the embedded text-to-SQL task and print its statistics."""
    from .demo import stats_table
    from .tasks.text2sql import build_dataset, task_statistics

    build_dataset(out, seed=seed)
    console.print(stats_table(task_statistics(out)))


@app.command()
def demo(
    sft_only: bool = typer.Option(False, "--sft-only", help="Only the quick look: tiny model, the SFT "
                                                            "recipe, held-out accuracy before/after "
                                                            "(no pipeline)."),
    second_round: int = typer.Option(1, "--second-round", min=0,
                                     help="Experiments Optuna proposes from the first four's results "
                                          "(0: none)."),
    runs: Path = typer.Option(Path("runs"), help="Pipeline artifacts under RUNS/kfp, MLflow under "
                                                 "RUNS/mlflow."),
    workdir: Path = typer.Option(Path("runs/demo"), help="--sft-only: where data, model, adapter and "
                                                         "summary go."),
    sft_steps: int | None = typer.Option(None, min=1, help="LoRA SFT steps (default: the SFT recipe's)."),
    ppo_steps: int | None = typer.Option(None, min=1, help="PPO steps per experiment (default: the "
                                                           "pipeline's)."),
    eval_examples: int | None = typer.Option(None, min=1, help="Examples per held-out split (default: the "
                                                                "recipe's / pipeline's)."),
    seed: int = typer.Option(0),
) -> None:
    """The embedded default end to end: the autoresearch pipeline through kfp.local, four RL
    experiments on text-to-SQL and one Optuna proposes from their results, compared in MLflow."""
    if sft_only:
        from .demo import run_sft_demo

        sft = {k: v for k, v in {"steps": sft_steps, "eval_examples": eval_examples}.items() if v is not None}
        summary = run_sft_demo(workdir, {**sft, "seed": seed}, console=console)
        console.print_json(json.dumps({"accuracy_before": summary["accuracy_before"],
                                       "accuracy_after": summary["accuracy_after"]}))
        return
    from .demo import SweepDemoConfig, run_sweep_demo

    params = {k: v for k, v in {"sft_steps": sft_steps, "ppo_steps": ppo_steps,
                                "eval_examples": eval_examples, "seed": seed}.items() if v is not None}
    run_sweep_demo(SweepDemoConfig(runs_dir=runs, second_round=second_round, params=params), console)


@app.command("eval")
def eval_(
    adapter: Path | None = typer.Option(None, help="PEFT adapter directory (save_weights_for_sampler "
                                                   "output); omit to evaluate the base model."),
    split: str = typer.Option("heldout_paraphrase", help="Split to evaluate."),
    data: Path = typer.Option(Path("runs/data"), help="Dataset directory (Spider layout); the embedded "
                                                      "task is built there if missing."),
    base_model: str | None = typer.Option(None, "--base-model", help="Model reference; default the "
                                                                     "adapter's own base model."),
    examples: int | None = typer.Option(None, min=1, help="Evaluate the first N examples only."),
    out: Path | None = typer.Option(None, help="Write the full report (with predictions) as JSON here."),
) -> None:
    """Execution accuracy, valid-SQL rate and a per-template breakdown on one split (greedy decoding)."""
    from rich.table import Table

    from .steps.evaluate import evaluate_adapter
    from .tasks.text2sql import SPLITS, build_dataset

    if not (data / "manifest.json").is_file() and not any(data.glob("*.jsonl")):
        console.print(f"no dataset in {data}: building the embedded text-to-SQL task there")
        build_dataset(data)
    if not (data / f"{split}.jsonl").is_file():
        console.print(f"[red]error:[/] {data} has no split {split!r}; "
                      f"the embedded task has {', '.join(SPLITS)}")
        raise typer.Exit(2)
    try:
        report = evaluate_adapter(data, split, adapter=adapter, base_model=base_model, examples=examples)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"{split}: execution accuracy {report['accuracy']:.3f} "
                        f"({report['correct']}/{report['total']}), valid SQL {report['valid_sql']:.3f}, "
                        f"timeouts {report['timeouts']}")
    for column in ("template", "correct", "total", "accuracy"):
        table.add_column(column, justify="left" if column == "template" else "right")
    for template, row in report["per_template"].items():
        table.add_row(template, str(row["correct"]), str(row["total"]), f"{row['accuracy']:.2f}")
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        console.print(f"report: {out}")


def _dataset(data: Path) -> Path:
    from .tasks.text2sql import build_dataset

    if not (data / "train.jsonl").is_file():
        console.print(f"no dataset in {data}: building the embedded text-to-SQL task there")
        build_dataset(data)
    return data


def _report(result: dict, out: Path) -> None:
    console.print(f"adapter: {result['sampler_path']}\nstate:   {result['state_path']}\n"
                  f"log:     {out / 'metrics.jsonl'}")
    console.print(f"adapter directory (for `kubetune eval --adapter`): {result['adapter_dir']}")


def _train(recipe: str, data: Path, out: Path, base_url: str | None, base_model: str | None,
           checkpoint_dir: Path | None, **settings) -> None:
    """Runs ``recipe`` with the command's settings: against ``base_url``, or a server started here
    (its checkpoint store ``checkpoint_dir``, default OUT/checkpoints) for the duration of the run."""
    from .recipes import RECIPES

    config_cls, run = RECIPES[recipe]
    fields = dict(data_dir=data, out_dir=out, base_model=base_model, **settings)
    # a wrong value fails before anything runs
    _config(config_cls, base_url=base_url or "http://unused", **fields)
    _dataset(data)
    if base_url is not None:
        _report(run(config_cls(base_url=base_url, **fields), log=console.print), out)
        return
    from .api.embedded import embedded_server

    console.print(f"starting a training server for {base_model or 'tiny'} in this process")
    with embedded_server(base_model or "tiny",
                         checkpoint_dir=checkpoint_dir or out / "checkpoints") as server:
        fields["base_model"] = server.model_name
        _report(run(config_cls(base_url=server.url, **fields), log=console.print), out)


def _default(config_cls, name: str):
    """A recipe config's default for ``name``: the one source the command-line options read."""
    return config_cls.__dataclass_fields__[name].default


DATA_OPT = typer.Option(Path("runs/data"), help="Dataset (Spider layout); the embedded task is built "
                                                "there if missing.")
BASE_URL_OPT = typer.Option(None, help="A running kubetune/Tinker server; omit to start one in this process.")
BASE_MODEL_OPT = typer.Option(None, help="Model reference for a server started here (default tiny), "
                                         "or the name a running server advertises (default: its first).")
API_KEY_OPT = typer.Option("tml-local", envvar="TINKER_API_KEY", help="API key (tml-...).")
CKPT_OPT = typer.Option(None, help="Checkpoint store of a server started here (default OUT/checkpoints); "
                                   "share it to chain runs.")
INIT_OPT = typer.Option(None, help="tinker:// training state to start from, e.g. the SFT run's final state.")
RESUME_OPT = typer.Option(False, help="Continue from the last state in OUT/checkpoints.jsonl.")


def _common(config_cls):
    """Options every recipe takes, with that recipe's defaults."""
    return {
        "seed": typer.Option(_default(config_cls, "seed")),
        "save_every": typer.Option(_default(config_cls, "save_every"), min=0,
                                   help="Steps between saved states (0: final only)."),
        "eval_examples": typer.Option(_default(config_cls, "eval_examples"), min=0,
                                      help="Held-out examples per split evaluated at the end (0: none)."),
        "lora_rank": typer.Option(_default(config_cls, "lora_rank"), min=1,
                                  help="LoRA rank of a fresh adapter."),
    }


_SFT, _PPO, _DPO = (_common(c) for c in (SFTConfig, PPOConfig, DPOConfig))


@train_app.command("sft")
def train_sft(
    data: Path = DATA_OPT,
    out: Path = typer.Option(Path("runs/sft"), help="metrics.jsonl, checkpoints.jsonl, adapter/ and "
                                                    "result.json go here."),
    base_url: str | None = BASE_URL_OPT,
    base_model: str | None = BASE_MODEL_OPT,
    api_key: str = API_KEY_OPT,
    checkpoint_dir: Path | None = CKPT_OPT,
    steps: int = typer.Option(_default(SFTConfig, "steps"), min=1),
    batch_size: int = typer.Option(_default(SFTConfig, "batch_size"), min=1),
    learning_rate: float = typer.Option(_default(SFTConfig, "learning_rate"),
                                        help="Peak LR; linear warmup, then cosine to 10 %."),
    warmup_steps: int = typer.Option(_default(SFTConfig, "warmup_steps"), min=0),
    max_length: int = typer.Option(_default(SFTConfig, "max_length"), min=8,
                                   help="Tokens per sequence; longer prompts lose schema text from "
                                        "the left."),
    lora_rank: int = _SFT["lora_rank"],
    train_unembed: bool = typer.Option(_default(SFTConfig, "train_unembed"),
                                       help="LoRA on lm_head too (off: it hurt the tied tiny model)."),
    seed: int = _SFT["seed"],
    save_every: int = _SFT["save_every"],
    resume: bool = RESUME_OPT,
    eval_examples: int = _SFT["eval_examples"],
) -> None:
    """Supervised fine-tuning: cross-entropy on the train split's prompt → SQL pairs."""
    _train("sft", data, out, base_url, base_model, checkpoint_dir, api_key=api_key, steps=steps,
           batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
           max_length=max_length, lora_rank=lora_rank, train_unembed=train_unembed,
           seed=seed, save_every=save_every, resume=resume, eval_examples=eval_examples)


@train_app.command("ppo")
def train_ppo(
    data: Path = DATA_OPT,
    out: Path = typer.Option(Path("runs/ppo"), help="metrics.jsonl, checkpoints.jsonl, adapter/ and "
                                                    "result.json go here."),
    base_url: str | None = BASE_URL_OPT,
    base_model: str | None = BASE_MODEL_OPT,
    api_key: str = API_KEY_OPT,
    checkpoint_dir: Path | None = CKPT_OPT,
    init_state: str | None = INIT_OPT,
    steps: int = typer.Option(_default(PPOConfig, "steps"), min=1),
    prompts_per_step: int = typer.Option(_default(PPOConfig, "prompts_per_step"), min=1),
    group_size: int = typer.Option(_default(PPOConfig, "group_size"), min=2, help="Samples per prompt."),
    learning_rate: float = typer.Option(_default(PPOConfig, "learning_rate")),
    loss: str = typer.Option(_default(PPOConfig, "loss"), help="ppo (clipped), importance_sampling or "
                                                               "stable_reinforce."),
    kl_coef: float = typer.Option(_default(PPOConfig, "kl_coef"), min=0.0,
                                  help="KL penalty to the base model (adapter off)."),
    reward: str = typer.Option(_default(PPOConfig, "reward"), help="execution, shaped or format."),
    temperature: float = typer.Option(_default(PPOConfig, "temperature"), min=0.0),
    max_tokens: int = typer.Option(_default(PPOConfig, "max_tokens"), min=1),
    lora_rank: int = _PPO["lora_rank"],
    seed: int = _PPO["seed"],
    save_every: int = _PPO["save_every"],
    resume: bool = RESUME_OPT,
    eval_examples: int = _PPO["eval_examples"],
) -> None:
    """GRPO-style RL: G samples per prompt of the rl split, group-normalised execution rewards."""
    _train("ppo", data, out, base_url, base_model, checkpoint_dir, api_key=api_key, init_state=init_state,
           steps=steps, prompts_per_step=prompts_per_step, group_size=group_size, learning_rate=learning_rate,
           loss=loss, kl_coef=kl_coef, reward=reward, temperature=temperature, max_tokens=max_tokens,
           lora_rank=lora_rank, seed=seed, save_every=save_every, resume=resume, eval_examples=eval_examples)


@train_app.command("dpo")
def train_dpo(
    data: Path = DATA_OPT,
    out: Path = typer.Option(Path("runs/dpo"), help="metrics.jsonl, checkpoints.jsonl, pairs.jsonl, "
                                                    "adapter/ and result.json go here."),
    base_url: str | None = BASE_URL_OPT,
    base_model: str | None = BASE_MODEL_OPT,
    api_key: str = API_KEY_OPT,
    checkpoint_dir: Path | None = CKPT_OPT,
    init_state: str | None = INIT_OPT,
    pairs_file: Path | None = typer.Option(None, help='JSONL of {"prompt", "chosen", "rejected"}; '
                                                      'omit to sample pairs.'),
    pair_prompts: int = typer.Option(_default(DPOConfig, "pair_prompts"), min=1,
                                     help="rl-split prompts sampled to build pairs."),
    pair_samples: int = typer.Option(_default(DPOConfig, "pair_samples"), min=2,
                                     help="Samples per prompt when building pairs."),
    gold_fallback: bool = typer.Option(_default(DPOConfig, "gold_fallback"),
                                       help="Use the gold SQL as chosen when no sample is correct."),
    reference: str = typer.Option(_default(DPOConfig, "reference"),
                                  help="snapshot (the starting policy) or base (adapter off)."),
    loss_on: str = typer.Option(_default(DPOConfig, "loss_on"), help="server (kubetune's dpo loss) or client "
                                                                     "(any Tinker service)."),
    beta: float = typer.Option(_default(DPOConfig, "beta")),
    nll_weight: float = typer.Option(_default(DPOConfig, "nll_weight"), min=0.0,
                                     help="Weight of the chosen answers' NLL (RPO); 0: plain DPO."),
    steps: int = typer.Option(_default(DPOConfig, "steps"), min=1),
    batch_size: int = typer.Option(_default(DPOConfig, "batch_size"), min=1, help="Pairs per step."),
    learning_rate: float = typer.Option(_default(DPOConfig, "learning_rate")),
    lora_rank: int = _DPO["lora_rank"],
    seed: int = _DPO["seed"],
    save_every: int = _DPO["save_every"],
    resume: bool = RESUME_OPT,
    eval_examples: int = _DPO["eval_examples"],
) -> None:
    """DPO on preference pairs from the policy's own samples (or a file), sigmoid loss, frozen reference."""
    _train("dpo", data, out, base_url, base_model, checkpoint_dir, api_key=api_key, init_state=init_state,
           pairs_file=pairs_file, pair_prompts=pair_prompts, pair_samples=pair_samples,
           gold_fallback=gold_fallback, reference=reference, loss_on=loss_on, beta=beta,
           nll_weight=nll_weight, steps=steps,
           batch_size=batch_size, learning_rate=learning_rate, lora_rank=lora_rank, seed=seed,
           save_every=save_every, resume=resume, eval_examples=eval_examples)


def _config(cls, **fields):
    """A recipe config, with a wrong value reported as a usage error rather than a traceback."""
    try:
        return cls(**fields)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@pipelines_app.command("compile")
def pipelines_compile(
    out: Path = typer.Option(Path("runs/pipelines"), help="Directory for <pipeline>.yaml files."),
    gpu: bool = typer.Option(True, help="Request a GPU for training steps (--no-gpu for CPU-only clusters)."),
) -> None:
    """Compile every pipeline to YAML that the Kubeflow UI uploads (kfp.Client accepts it too)."""
    from kubetune.pipelines.compile import compile_pipelines

    for path in compile_pipelines(out, gpu=gpu):
        console.print(f"compiled {path}")


@pipelines_app.command("components")
def pipelines_components(
    out: Path | None = typer.Option(None, help="Directory for <component>.yaml (default: components/yaml "
                                               "in the repo)."),
) -> None:
    """Compile every component to YAML (committed under components/yaml; a test checks they are current)."""
    from kubetune.pipelines.compile import COMPONENT_YAML_DIR, compile_components

    for path in compile_components(out or COMPONENT_YAML_DIR):
        console.print(f"compiled {path}")


PIPELINE_ARG = typer.Argument(..., help="rl_finetune, dpo_finetune or autoresearch.")
PARAM_OPT = typer.Option([], "--param", help="Pipeline parameter as name=value (JSON for lists); repeatable.")
HOST_OPT = typer.Option(..., "--host", envvar="KF_PIPELINES_ENDPOINT",
                        help="KFP API endpoint, e.g. http://localhost:8080 after `kubectl port-forward "
                             "-n kubeflow svc/ml-pipeline-ui 8080:80`.")
TOKEN_OPT = typer.Option(None, "--token", envvar="KUBETUNE_KFP_TOKEN",
                         help="Bearer token for the KFP API (e.g. `gcloud auth print-access-token`).")
NAMESPACE_OPT = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user deployments).")
EXPERIMENT_OPT = typer.Option("kubetune", "--experiment", help="KFP experiment the run belongs to.")
GPU_OPT = typer.Option(True, "--gpu/--no-gpu",
                       help="Compile for the GPU node pool (--no-gpu: CPU-only cluster).")


def _pipeline_params(pipeline: str, param: list[str]) -> dict:
    """The typed ``--param`` values of a known pipeline, or a usage error that says what is wrong."""
    from kubetune.pipelines import PIPELINES
    from kubetune.pipelines.compile import parse_params

    if pipeline not in PIPELINES:
        raise typer.BadParameter(f"unknown pipeline {pipeline!r}; "
                                 f"choose one of {', '.join(sorted(PIPELINES))}", param_hint="PIPELINE")
    try:
        return parse_params(PIPELINES[pipeline], param)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None


@app.command("run")
def run_pipeline(
    pipeline: str = PIPELINE_ARG,
    local: bool = typer.Option(False, "--local", help="Run on this machine through kfp.local."),
    param: list[str] = PARAM_OPT,
    runs: Path = typer.Option(Path("runs"), help="Local outputs: kfp artifacts under RUNS/kfp, MLflow "
                                                 "under RUNS/mlflow."),
    shared_server: bool = typer.Option(True, "--shared-server/--server-per-step",
                                       help="One training server for all steps (as on a cluster), "
                                            "or one per step."),
) -> None:
    """Run a pipeline: every step in this environment (kfp SubprocessRunner), artifacts under ./runs."""
    from kubetune.pipelines.local import run_local

    if not local:
        raise typer.BadParameter("`run` runs on this machine: add --local; to run on a Kubeflow cluster use "
                                 "`kubetune submit PIPELINE --host URL`", param_hint="--local")
    params = _pipeline_params(pipeline, param)
    result = run_local(pipeline, params, runs, shared_server=shared_server, log=console.print)
    outputs = ", ".join(f"{k}={v}" for k, v in result["outputs"].items()) or "none"
    console.print(f"{pipeline}: finished in {result['seconds']:.0f} s; outputs: {outputs}\n"
                  f"artifacts: {result['pipeline_root']}\nMLflow:    {result['mlflow']} "
                  f"(mlflow ui --backend-store-uri sqlite:///{result['mlflow']}/mlflow.db)")


def _send(call, pipeline: str, param: list[str], *, host: str, token: str | None, namespace: str | None,
          gpu: bool, **kwargs) -> dict:
    """Compiles ``pipeline`` with its ``--param`` values and hands it to a KFP API call; a refusal or
    failure of the backend becomes a message instead of a traceback."""
    from kubetune.pipelines.remote import RemoteTarget

    params = _pipeline_params(pipeline, param)
    try:
        return call(pipeline, target=RemoteTarget(host=host, token=token, namespace=namespace, gpu=gpu),
                    params=params, **kwargs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except Exception as exc:  # kfp_server_api.ApiException, urllib3 connection errors
        status = getattr(exc, "status", None)
        detail = (f"HTTP {status}: {getattr(exc, 'body', '') or getattr(exc, 'reason', '')}"
                  if status else str(exc))
        console.print(f"[red]the KFP API at {host} refused or failed:[/] {detail}\n"
                      "check --host (the ml-pipeline-ui service or your Kubeflow /pipeline URL), "
                      "--token and --namespace")
        raise typer.Exit(1) from None


@app.command()
def submit(
    pipeline: str = PIPELINE_ARG,
    host: str = HOST_OPT,
    param: list[str] = PARAM_OPT,
    experiment: str = EXPERIMENT_OPT,
    run_name: str | None = typer.Option(None, "--run-name",
                                        help="Display name of the run (default: the pipeline)."),
    token: str | None = TOKEN_OPT,
    namespace: str | None = NAMESPACE_OPT,
    gpu: bool = GPU_OPT,
) -> None:
    """Start one run of a pipeline on a Kubeflow Pipelines backend."""
    from kubetune.pipelines.remote import submit as submit_run

    result = _send(submit_run, pipeline, param, host=host, token=token, namespace=namespace, gpu=gpu,
                   experiment=experiment, run_name=run_name)
    console.print(f"submitted {pipeline}: run {result['run_id']} in experiment {experiment!r}\n"
                  f"{result['url']}")


@app.command()
def schedule(
    pipeline: str = PIPELINE_ARG,
    host: str = HOST_OPT,
    cron: str = typer.Option(..., "--cron",
                             help="6 fields, seconds first: '0 0 2 * * *' is 02:00 every day."),
    param: list[str] = PARAM_OPT,
    experiment: str = EXPERIMENT_OPT,
    name: str | None = typer.Option(None, "--name", help="Display name of the recurring run."),
    max_concurrency: int = typer.Option(1, "--max-concurrency", min=1,
                                        help="Runs of this schedule allowed at once."),
    token: str | None = TOKEN_OPT,
    namespace: str | None = NAMESPACE_OPT,
    gpu: bool = GPU_OPT,
) -> None:
    """Run a pipeline on a schedule (a KFP recurring run of an uploaded pipeline version)."""
    from kubetune.pipelines.remote import schedule as schedule_run

    result = _send(schedule_run, pipeline, param, host=host, token=token, namespace=namespace, gpu=gpu,
                   cron=cron, experiment=experiment, job_name=name, max_concurrency=max_concurrency)
    console.print(f"scheduled {pipeline} at {cron!r}: recurring run {result['recurring_run_id']} "
                  f"(pipeline {result['pipeline_id']}, version {result['version_id']})\n{result['url']}")


@app.command()
def serve(
    base_model: str = typer.Option("tiny", "--base-model",
                                   help="Model reference: tiny, a local directory or an org/name Hub id."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything beyond loopback needs API keys."),
    port: int = typer.Option(8000, help="TCP port."),
    keys_file: Path | None = typer.Option(None, "--keys-file",
                                          help="API keys: lines of '<tml-key> <tenant>' "
                                               "(or KUBETUNE_API_KEYS)."),
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir",
                                               help="Checkpoint store (default $KUBETUNE_HOME/checkpoints)."),
    op_trace: Path | None = typer.Option(None, "--op-trace",
                                         help="Append one JSON line per engine operation "
                                              "(queued/started/seconds) to this file."),
) -> None:
    """Serve the Tinker training API for one base model; the official `tinker` SDK is the client."""
    from .api import build_service
    from .api import serve as run_server
    from .models.reference import kubetune_home

    with console.status(f"loading {base_model}…"):
        service = build_service(base_model, checkpoint_dir=checkpoint_dir or kubetune_home() / "checkpoints",
                                keys_file=keys_file, op_trace=op_trace)
    console.print(f"serving [bold]{service.config.base_model}[/] on http://{host}:{port} "
                  f"(checkpoints in {service.store.root})")
    run_server(service, host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
