"""What every recipe shares: its settings, its session with the training server, its run directory,
the trainer it opens, and how it finishes (final adapter, evaluation, result).

A recipe talks to a training server only through the official ``tinker`` SDK, at ``base_url``:
a shared server (a cluster, another terminal) or one that the caller started for it (the CLI,
the demo, a pipeline step). The adapter always comes back through the SDK (external-weights
export and signed download URLs), so a recipe behaves the same against a local and a remote server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinker import types

from ..tasks.text2sql import HELDOUT_SPLITS, SqlGenerator, evaluate_examples, load_split
from .data import prompt_tokens


@dataclass
class RunSettings:
    """Settings every recipe has; each recipe's config adds its own after these."""

    data_dir: Path  # a dataset in Spider layout (`kubetune data build` or a Spider-format folder)
    out_dir: Path  # metrics.jsonl, checkpoints.jsonl and result.json go here
    base_url: str  # the training server: `kubetune serve`, or any Tinker-compatible service
    base_model: str | None = None  # the model to train; None: the one the server serves
    api_key: str = "tml-local"
    seed: int = 0  # batch order, sampling and adapter initialisation
    lora_rank: int = 16  # for a fresh adapter only; a state to start from brings its own
    # LoRA on lm_head too (the Tinker API's default). Off: on the tied-embedding tiny model it cost
    # 0.32 -> 0.22 held-out values after 400 steps (docs/recipes.md), and TRL cannot train it.
    train_unembed: bool = False
    max_prompt_tokens: int | None = 256  # longer prompts lose schema text from the left
    save_every: int = 50  # steps between saved states (0: only the final one)
    resume: bool = False  # continue from the last state in out_dir/checkpoints.jsonl
    eval_examples: int = 100  # per split, the first N, greedy, after training (0: no evaluation)
    eval_splits: tuple[str, ...] = field(default=HELDOUT_SPLITS)


@contextmanager
def tinker_session(base_url: str, api_key: str) -> Iterator[Any]:
    """A ``tinker.ServiceClient`` whose session is closed at the end (success, errored or
    interrupted), so its heartbeats stop before a server started for the run does."""
    import tinker

    service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
    status = "errored"
    try:
        yield service
        status = "success"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        try:
            service.close(status).result(timeout=30)
        except Exception:  # best effort: the server also ends sessions whose heartbeats stop
            pass


def served_model(settings: RunSettings) -> str:
    """The base model to train: the configured one, or the first the server advertises."""
    import tinker

    if settings.base_model:
        return settings.base_model
    rest = tinker.RestClient(base_url=settings.base_url, api_key=settings.api_key)
    models = rest.get_server_capabilities().result().supported_models
    if not models or not models[0].model_name:
        raise ValueError(f"the server at {settings.base_url} advertises no model; pass base_model")
    return models[0].model_name


class RunLog:
    """``metrics.jsonl`` (one line per step), ``checkpoints.jsonl`` (one line per saved state: what
    ``resume`` continues from) and ``result.json`` in a run's output directory."""

    def __init__(self, out_dir: Path, resume: bool):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in ("metrics.jsonl", "checkpoints.jsonl", "result.json"):
                (self.out_dir / name).unlink(missing_ok=True)
        self.started = time.perf_counter()

    def last_checkpoint(self) -> dict | None:
        path = self.out_dir / "checkpoints.jsonl"
        if not path.is_file():
            return None
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def metrics(self, row: dict[str, Any]) -> None:
        self._append("metrics.jsonl", row)

    def checkpoint(self, step: int, name: str, state_path: str) -> None:
        self._append("checkpoints.jsonl", {"step": step, "name": name, "state_path": state_path})

    def result(self, config: Any, **fields: Any) -> dict[str, Any]:
        result = {"config": config_dict(config), **fields}
        (self.out_dir / "result.json").write_text(json.dumps(result, indent=2))
        return result

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.out_dir / name, "a") as f:
            f.write(json.dumps(row) + "\n")


def config_dict(config: Any) -> dict[str, Any]:
    """A config as JSON values: paths as strings, callables by their qualified name."""
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if callable(value):
            return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
        return value

    return {k: plain(v) for k, v in asdict(config).items()}


def should_save(step: int, steps: int, save_every: int) -> str | None:
    """The checkpoint name to save after ``step``, or None."""
    if step == steps - 1:
        return "final"
    if save_every and (step + 1) % save_every == 0:
        return f"{step:06d}"
    return None


def sampler_generator(sampling_client, tokenizer, max_tokens: int = 96,
                      max_prompt_tokens: int | None = None) -> SqlGenerator:
    """Greedy SQL from a Tinker sampling client; all prompts are in flight at once."""
    greedy = types.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def model_input(prompt: str) -> types.ModelInput:
        return types.ModelInput.from_ints(prompt_tokens(tokenizer, prompt, max_prompt_tokens))

    def generate(prompts: Sequence[str]) -> list[str]:
        futures = [sampling_client.sample(model_input(p), 1, greedy) for p in prompts]
        return [tokenizer.decode(f.result().sequences[0].tokens, skip_special_tokens=True) for f in futures]

    return generate


def evaluate_splits(generate: SqlGenerator, data_dir: Path, splits: Sequence[str],
                    examples: int) -> dict[str, dict]:
    """Execution accuracy and valid-SQL rate on the first ``examples`` of each split."""
    out = {}
    for split in splits:
        report = evaluate_examples(generate, load_split(data_dir, split)[:examples], data_dir)
        out[split] = {"accuracy": report["accuracy"], "valid_sql": report["valid_sql"],
                      "total": report["total"]}
    return out


def evaluate_client(client, tokenizer, config: RunSettings) -> dict[str, dict]:
    """A sampling client's greedy accuracy on the run's evaluation splits (``config.eval_examples``
    each): how every recipe evaluates its final adapter, and the demo its base model."""
    generate = sampler_generator(client, tokenizer, max_prompt_tokens=config.max_prompt_tokens)
    return evaluate_splits(generate, Path(config.data_dir), config.eval_splits, config.eval_examples)


def open_trainer(service, config: RunSettings, run: RunLog, log,
                 init_state: str | None = None) -> tuple[Any, int]:
    """(training client, first step): resumed from the run's last saved state (weights + optimizer)
    when ``config.resume``, started from ``init_state`` (weights only: a fresh optimizer, e.g. RL
    after SFT), or a fresh adapter of ``config.lora_rank``."""
    last = run.last_checkpoint() if config.resume else None
    if last is not None:
        log(f"resuming from {last['state_path']} at step {last['step'] + 1}")
        return (service.create_training_client_from_state_with_optimizer(last["state_path"]).result(),
                last["step"] + 1)
    if init_state is not None:
        return service.create_training_client_from_state(init_state).result(), 0
    return service.create_lora_training_client(base_model=served_model(config), rank=config.lora_rank,
                                               seed=config.seed,
                                               train_unembed=config.train_unembed).result(), 0


def finish(service, trainer, tokenizer, run: RunLog, config, log, **extra: Any) -> dict[str, Any]:
    """Saves the final adapter, evaluates it (``config.eval_examples`` per split), downloads it into
    ``out_dir/adapter`` and writes result.json."""
    sampler_path = trainer.save_weights_for_sampler("final").result().path
    train_seconds = run.elapsed()
    evaluation = {}
    if config.eval_examples:
        client = service.create_sampling_client(model_path=sampler_path).result()
        evaluation = evaluate_client(client, tokenizer, config)
        log("eval: " + ", ".join(f"{s} {r['accuracy']:.3f}" for s, r in evaluation.items()))
    adapter_dir = download_adapter(trainer, config.base_url, config.api_key, run.out_dir / "adapter")
    return run.result(config, sampler_path=sampler_path, adapter_dir=str(adapter_dir),
                      state_path=run.last_checkpoint()["state_path"], steps=config.steps,
                      seconds=train_seconds, eval=evaluation, **extra)


def download_adapter(trainer, base_url: str, api_key: str, out_dir: Path, name: str = "final") -> Path:
    """The training client's current weights as a PEFT adapter directory on this machine, through
    the Tinker API's external-weights export (``save_weights_external``, then per-file signed URLs);
    files of an earlier download there are replaced."""
    import httpx
    import tinker

    path = trainer.save_weights_external(name).result().path
    urls = tinker.RestClient(base_url=base_url, api_key=api_key).get_external_weights_urls(path).result().urls
    out_dir = Path(out_dir)
    for relative, url in urls.items():
        target = (out_dir / relative).resolve()
        if out_dir.resolve() not in target.parents:
            raise ValueError(f"server listed a file outside the adapter directory: {relative!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with httpx.stream("GET", url, timeout=120.0) as response:
            response.raise_for_status()
            with open(target, "wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
    return out_dir
