"""Execution accuracy of a model on a text-to-SQL split: generate SQL greedily, run it sandboxed, compare."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tinker import types

from .tasks.text2sql import Example, execution_accuracy, extract_sql

# Anything that turns prompts into completions: the engine in-process, a Tinker sampling client, vLLM.
SqlGenerator = Callable[[Sequence[str]], list[str]]

MAX_SQL_TOKENS = 96


def engine_generator(engine, tokenizer, model_id: str | None, max_tokens: int = MAX_SQL_TOKENS,
                     batch_size: int = 32) -> SqlGenerator:
    """Greedy decoding on an in-process engine (``model_id=None`` samples the base model)."""
    greedy = types.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def generate(prompts: Sequence[str]) -> list[str]:
        completions = []
        for start in range(0, len(prompts), batch_size):
            chunk = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts[start:start + batch_size]]
            for response in engine.sample_batch(chunk, 1, greedy, model_id=model_id):
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
