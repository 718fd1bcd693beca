"""Execution accuracy of any generator on examples of the task: generate SQL greedily, run it
sandboxed, compare."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .dataset import Example
from .execution_accuracy import execution_accuracy
from .rewards import extract_sql

# Anything that turns prompts into completions: the engine in-process, a Tinker sampling client, vLLM.
SqlGenerator = Callable[[Sequence[str]], list[str]]


def evaluate_examples(generate: SqlGenerator, examples: Sequence[Example], data_dir: str | Path) -> dict:
    """Execution accuracy (see docs/execution-accuracy.md) plus the valid-SQL rate and the predictions."""
    prompts = [example.prompt(data_dir) for example in examples]
    predictions = [extract_sql(c) for c in generate(prompts)]
    report = execution_accuracy(examples, predictions, data_dir)
    report["valid_sql"] = 1.0 - report["errors"] / len(examples) if examples else 0.0
    report["predictions"] = predictions
    return report
