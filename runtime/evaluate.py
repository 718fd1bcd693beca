"""Execution accuracy of a model on a text-to-SQL split: generate SQL greedily, run it sandboxed, compare."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tinker import types

from .tasks.text2sql import Example, execution_accuracy, extract_sql

# Anything that turns prompts into completions: the engine in-process, a Tinker sampling client, vLLM.
SqlGenerator = Callable[[Sequence[str]], list[str]]

MAX_SQL_TOKENS = 96


def engine_generator(engine, tokenizer, model_id: str | None, max_tokens: int = MAX_SQL_TOKENS,
                     batch_size: int = 32, *, sampler_path: str | Path | None = None) -> SqlGenerator:
    """Greedy decoding on an in-process engine: a job (``model_id``), saved sampler weights
    (``sampler_path``, a PEFT adapter directory) or, with neither, the base model."""
    greedy = types.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def generate(prompts: Sequence[str]) -> list[str]:
        completions = []
        for start in range(0, len(prompts), batch_size):
            chunk = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts[start:start + batch_size]]
            for response in engine.sample_batch(chunk, 1, greedy, model_id=model_id, sampler_path=sampler_path):
                completions.append(tokenizer.decode(response.sequences[0].tokens, skip_special_tokens=True))
        return completions

    return generate


def evaluate_examples(generate: SqlGenerator, examples: Sequence[Example], data_dir: str | Path) -> dict:
    """Execution accuracy (see docs/execution-accuracy.md) plus the valid-SQL rate and the predictions."""
    prompts = [example.prompt(data_dir) for example in examples]
    predictions = [extract_sql(c) for c in generate(prompts)]
    report = execution_accuracy(examples, predictions, data_dir)
    report["valid_sql"] = 1.0 - report["errors"] / len(examples) if examples else 0.0
    report["predictions"] = predictions
    return report


def adapter_base_model(adapter: str | Path) -> str:
    """The base model an adapter directory was trained on (``base_model_name_or_path``)."""
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{adapter} is not an adapter directory: it has no adapter_config.json "
                                "(pass the directory save_weights_for_sampler wrote)")
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config} names no base model; pass --base-model")
    return str(base)


def local_generator(adapter: str | Path | None, base_model: str) -> SqlGenerator:
    """Greedy SQL from ``adapter`` (a PEFT directory; ``None``: the bare base model) on an engine
    loaded in this process from ``base_model``."""
    from .engine import Engine
    from .models.reference import load_base_model

    model, tokenizer = load_base_model(base_model)
    # The engine checks an adapter against the base it names; base_model only says where those
    # weights are on this machine (e.g. the same model in another directory).
    engine = Engine(model, tokenizer, base_model=adapter_base_model(adapter) if adapter is not None else base_model)
    return engine_generator(engine, tokenizer, None, sampler_path=adapter)


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
    from .tasks.text2sql import load_split

    if adapter is None and base_model is None:
        raise ValueError("nothing to evaluate: pass an adapter, a base model, or both")
    base_model = base_model or adapter_base_model(adapter)  # type: ignore[arg-type]
    selected = load_split(data_dir, split)[:examples]
    if not selected:
        raise ValueError(f"split {split!r} of {data_dir} has no examples")
    started = time.perf_counter()
    report = evaluate_examples(local_generator(adapter, base_model), selected, data_dir)
    report.update(split=split, adapter=None if adapter is None else str(adapter), base_model=base_model,
                  seconds=round(time.perf_counter() - started, 2))
    return report
