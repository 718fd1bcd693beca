"""``kubetune``: the command line (typer + rich)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="kubetune: LoRA RL post-training of LLMs on Kubeflow, with a Tinker-compatible API.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
model_app = typer.Typer(help="Base models: bootstrap the embedded tiny model, resolve references.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: build the embedded text-to-SQL task.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Recipes: training loops that drive a model through the Tinker API.", no_args_is_help=True)
app.add_typer(train_app, name="train")
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
    out: Path = typer.Option(..., "--out", help="Directory for the model (reused when its content hash matches)."),
    seed: int = typer.Option(0, help="Seed for data, tokenizer and weights."),
    force: bool = typer.Option(False, help="Rebuild even if a matching model exists."),
) -> None:
    """Build the tiny Gemma-architecture model: local tokenizer + pretraining on the task's own corpus."""
    from .models.bootstrap import bootstrap_tiny_model

    with console.status("pretraining the tiny model…"):
        result = bootstrap_tiny_model(out, seed=seed, force=force)
    console.print(f"[green]{'cached' if result.cache_hit else 'built'}[/] {result.path}: "
                  f"{result.params / 1e6:.2f} M params, {result.steps} steps, final loss {result.final_loss:.3f}, "
                  f"{result.seconds:.1f} s (content hash {result.content_hash[:12]})")


@data_app.command("build")
def data_build(
    out: Path = typer.Option(..., "--out", help="Output directory (JSONL splits + Spider-layout databases)."),
    seed: int = typer.Option(0, help="Generator seed: the same seed gives byte-identical data."),
) -> None:
    """Generate the embedded text-to-SQL task and print its statistics."""
    from .demo import _stats_table
    from .tasks.text2sql import build_dataset, task_statistics

    build_dataset(out, seed=seed)
    console.print(_stats_table(task_statistics(out)))


@app.command()
def demo(
    workdir: Path = typer.Option(Path("runs/demo"), help="Where data, model, adapter and summary go."),
    sft_steps: int = typer.Option(150, help="LoRA SFT steps."),
    eval_examples: int = typer.Option(100, help="Examples per held-out split."),
    seed: int = typer.Option(0),
) -> None:
    """The embedded default end to end: task, tiny model, LoRA SFT on the engine, held-out accuracy."""
    from .demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(workdir=workdir, sft_steps=sft_steps, eval_examples=eval_examples, seed=seed), console)
    console.print_json(json.dumps({"accuracy_before": summary["accuracy_before"],
                                   "accuracy_after": summary["accuracy_after"]}))


@app.command("eval")
def eval_(
    adapter: Path | None = typer.Option(None, help="PEFT adapter directory (save_weights_for_sampler output); omit to evaluate the base model."),
    split: str = typer.Option("heldout_paraphrase", help="Split to evaluate."),
    data: Path = typer.Option(Path("runs/data"), help="Dataset directory (Spider layout); the embedded task is built there if missing."),
    base_model: str | None = typer.Option(None, "--base-model", help="Model reference; default the adapter's own base model."),
    examples: int | None = typer.Option(None, min=1, help="Evaluate the first N examples only."),
    out: Path | None = typer.Option(None, help="Write the full report (with predictions) as JSON here."),
) -> None:
    """Execution accuracy, valid-SQL rate and a per-template breakdown on one split (greedy decoding)."""
    from rich.table import Table

    from .evaluate import evaluate_adapter
    from .tasks.text2sql import SPLITS, build_dataset

    if not (data / "manifest.json").is_file() and not any(data.glob("*.jsonl")):
        console.print(f"no dataset in {data}: building the embedded text-to-SQL task there")
        build_dataset(data)
    if not (data / f"{split}.jsonl").is_file():
        console.print(f"[red]error:[/] {data} has no split {split!r}; the embedded task has {', '.join(SPLITS)}")
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


@train_app.command("sft")
def train_sft(
    data: Path = typer.Option(Path("runs/data"), help="Dataset (Spider layout); the embedded task is built there if missing."),
    out: Path = typer.Option(Path("runs/sft"), help="metrics.jsonl, checkpoints.jsonl and result.json go here."),
    base_url: str | None = typer.Option(None, help="A running kubetune/Tinker server; omit to start one in this process."),
    base_model: str = typer.Option("tiny", help="Model reference (embedded server) or the name the server advertises."),
    api_key: str = typer.Option("tml-local", envvar="TINKER_API_KEY", help="API key (tml-...)."),
    steps: int = typer.Option(150, min=1),
    batch_size: int = typer.Option(16, min=1),
    learning_rate: float = typer.Option(3e-3, help="Peak LR; linear warmup, then cosine to 10 %."),
    lora_rank: int = typer.Option(16, min=1),
    seed: int = typer.Option(0),
    save_every: int = typer.Option(50, min=0, help="Steps between saved states (0: final only)."),
    resume: bool = typer.Option(False, help="Continue from the last state in OUT/checkpoints.jsonl."),
) -> None:
    """Supervised fine-tuning: cross-entropy on the train split's prompt → SQL pairs."""
    from .recipes import SFTConfig, run_sft
    from .tasks.text2sql import build_dataset

    if not (data / "train.jsonl").is_file():
        console.print(f"no dataset in {data}: building the embedded text-to-SQL task there")
        build_dataset(data)
    result = run_sft(SFTConfig(data_dir=data, out_dir=out, base_url=base_url, base_model=base_model, api_key=api_key,
                               steps=steps, batch_size=batch_size, learning_rate=learning_rate, lora_rank=lora_rank,
                               seed=seed, save_every=save_every, resume=resume), log=console.print)
    console.print(f"adapter: {result['sampler_path']}\nstate:   {result['state_path']}\nlog:     {out / 'metrics.jsonl'}")
    if result["adapter_dir"]:
        console.print(f"adapter directory (for `kubetune eval --adapter`): {result['adapter_dir']}")


@app.command()
def serve(
    base_model: str = typer.Option("tiny", "--base-model", help="Model reference: tiny, a local directory or an org/name Hub id."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything beyond loopback needs API keys."),
    port: int = typer.Option(8000, help="TCP port."),
    keys_file: Path | None = typer.Option(None, "--keys-file", help="API keys: lines of '<tml-key> <tenant>' (or KUBETUNE_API_KEYS)."),
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir", help="Checkpoint store (default $KUBETUNE_HOME/checkpoints)."),
) -> None:
    """Serve the Tinker training API for one base model; the official `tinker` SDK is the client."""
    from .api import build_service
    from .api import serve as run_server
    from .models.reference import kubetune_home

    with console.status(f"loading {base_model}…"):
        service = build_service(base_model, checkpoint_dir=checkpoint_dir or kubetune_home() / "checkpoints",
                                keys_file=keys_file)
    console.print(f"serving [bold]{service.config.base_model}[/] on http://{host}:{port} "
                  f"(checkpoints in {service.store.root})")
    run_server(service, host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
