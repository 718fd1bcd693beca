"""Evaluation: greedy execution accuracy of a trained model artifact (the pipeline step, with a
report), or of an adapter directory (``kubetune eval``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..engine.generation import adapter_base_model, local_generator
from ..recipes.common import sampler_generator, tinker_session
from ..tasks.text2sql import evaluate_examples, load_split, pretraining_corpus
from .artifacts import read_model_info


def evaluate(data_dir: str | Path, model_dir: str | Path, splits: list[str], examples: int, *,
             training_api_url: str = "", api_key: str = "tml-local") -> dict[str, Any]:
    """Greedy execution accuracy of a trained model artifact's adapter on each split, with a
    per-template breakdown; returns ``{"splits": {split: report}, "markdown": str}``.

    With ``training_api_url`` the completions come from that server (the artifact's saved sampler
    weights; the accelerator is there), otherwise from an engine loaded in this process."""
    info = read_model_info(model_dir)
    selected = {split: load_split(data_dir, split)[:examples] for split in splits}
    empty = [split for split, chosen in selected.items() if not chosen]
    if empty:
        raise ValueError(f"split(s) {', '.join(empty)} of {data_dir} have no examples")
    reports = {}
    with _generator(info, Path(model_dir), training_api_url, api_key) as generate:
        for split, chosen in selected.items():
            report = evaluate_examples(generate, chosen, data_dir)
            reports[split] = {k: report[k] for k in ("accuracy", "valid_sql", "total", "correct")
                              if k in report}
            reports[split]["per_template"] = report.get("per_template", {})
    return {"splits": reports, "markdown": markdown_report(info, reports)}


@contextmanager
def _generator(info: dict[str, Any], model_dir: Path, training_api_url: str, api_key: str) -> Iterator[Any]:
    """Greedy SQL generation for a model artifact: through a training server, or a local engine."""
    if training_api_url and info.get("sampler_path"):
        with tinker_session(training_api_url, api_key) as service:
            client = service.create_sampling_client(model_path=info["sampler_path"]).result()
            yield sampler_generator(client, client.get_tokenizer())
        return
    adapter = model_dir / info["adapter"] if info.get("adapter") else None
    if info["kind"] == "trained" and adapter is None:
        raise ValueError(f"{model_dir} holds no local adapter; pass the training_api_url of the server that "
                         "trained it")
    yield local_generator(adapter, info["base_model"], tiny_corpus=pretraining_corpus)


def markdown_report(info: dict[str, Any], reports: dict[str, dict]) -> str:
    steps = f", {info['steps']} steps" if "steps" in info else ""
    lines = [f"# Execution accuracy: {info.get('recipe', 'base model')}", "",
             f"Base model `{info['base_model']}`{steps}.", "",
             "| split | examples | execution accuracy | valid SQL |", "|---|---|---|---|"]
    for split, r in reports.items():
        lines.append(f"| {split} | {r['total']} | {r['accuracy']:.3f} | {r['valid_sql']:.3f} |")
    return "\n".join(lines) + "\n"


def evaluate_adapter(data_dir: str | Path, split: str, *, adapter: str | Path | None = None,
                     base_model: str | None = None, examples: int | None = None) -> dict:
    """Execution accuracy of an adapter (or of the bare base model) on one split of a dataset.

    Args:
        data_dir: a dataset in Spider layout (``kubetune data build`` or a Spider-format source).
        split: e.g. ``heldout_paraphrase``.
        adapter: a PEFT adapter directory; ``None`` evaluates the base model alone.
        base_model: model reference; default the adapter's own ``base_model_name_or_path``.
        examples: evaluate the first N examples of the split (deterministic); default all.

    Returns:
        The report of :func:`evaluate_examples` plus ``split``, ``adapter``, ``base_model`` and
        ``seconds``.
    """
    if adapter is None and base_model is None:
        raise ValueError("nothing to evaluate: pass an adapter, a base model, or both")
    base_model = base_model or adapter_base_model(adapter)  # type: ignore[arg-type]
    selected = load_split(data_dir, split)[:examples]
    if not selected:
        raise ValueError(f"split {split!r} of {data_dir} has no examples")
    started = time.perf_counter()
    report = evaluate_examples(local_generator(adapter, base_model, tiny_corpus=pretraining_corpus), selected,
                              data_dir)
    report.update(split=split, adapter=None if adapter is None else str(adapter), base_model=base_model,
                  seconds=round(time.perf_counter() - started, 2))
    return report
