"""Greedy generation on an engine in this process: a job, saved sampler weights, or the bare base model.

What evaluation uses when no training server is at hand (``kubetune eval``, an evaluation step
without ``training_api_url``). Prompts in, completions out: the task decides what they mean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from tinker import types

# prompts -> completions (the same shape as kubetune.tasks.text2sql.SqlGenerator)
Generator = Callable[[Sequence[str]], list[str]]

MAX_NEW_TOKENS = 96


def engine_generator(engine, tokenizer, model_id: str | None, max_tokens: int = MAX_NEW_TOKENS,
                     batch_size: int = 32, *, sampler_path: str | Path | None = None) -> Generator:
    """Greedy decoding on an in-process engine: a job (``model_id``), saved sampler weights
    (``sampler_path``, a PEFT adapter directory) or, with neither, the base model."""
    greedy = types.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def generate(prompts: Sequence[str]) -> list[str]:
        completions = []
        for start in range(0, len(prompts), batch_size):
            chunk = [tokenizer(p, add_special_tokens=True)["input_ids"]
                     for p in prompts[start:start + batch_size]]
            for response in engine.sample_batch(chunk, 1, greedy, model_id=model_id,
                                                sampler_path=sampler_path):
                completions.append(tokenizer.decode(response.sequences[0].tokens, skip_special_tokens=True))
        return completions

    return generate


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


def local_generator(adapter: str | Path | None, base_model: str,
                    tiny_corpus: Callable[[int], Sequence[str]] | None = None) -> Generator:
    """Greedy SQL from ``adapter`` (a PEFT directory; ``None``: the bare base model) on an engine
    loaded in this process from ``base_model`` (``tiny_corpus``: see ``load_base_model``)."""
    from ..models.reference import load_base_model
    from .engine import Engine

    model, tokenizer = load_base_model(base_model, tiny_corpus=tiny_corpus)
    # The engine checks an adapter against the base it names; base_model only says where those
    # weights are on this machine (e.g. the same model in another directory).
    engine = Engine(model, tokenizer,
                    base_model=adapter_base_model(adapter) if adapter is not None else base_model)
    return engine_generator(engine, tokenizer, None, sampler_path=adapter)
