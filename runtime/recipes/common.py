"""What every recipe shares: where it trains, its run directory, its batches, and its evaluation.

A recipe talks to a training server only through the official ``tinker`` SDK. With ``base_url``
set that is a shared server (a cluster, another terminal); without it the recipe starts an
embedded server in its own process, whose checkpoint store defaults to ``<out_dir>/checkpoints``
(pass the same ``checkpoint_dir`` to chain recipes, e.g. PPO from an SFT state).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tinker import types

from ..api.embedded import EmbeddedServer, embedded_server
from ..evaluate import SqlGenerator, evaluate_examples
from ..tasks.text2sql import Example, Reward, db_path, execute_sql, load_split, text2sql_reward

DEFAULT_EVAL_SPLITS = ("heldout_values", "heldout_paraphrase", "heldout_database")


@dataclass(frozen=True)
class Endpoint:
    url: str
    base_model: str  # the name create_lora_training_client(base_model=...) takes
    embedded: EmbeddedServer | None  # set when this run started its own server

    def local_path(self, api_key: str, tinker_path: str) -> str | None:
        """The directory of a checkpoint on this machine (embedded runs only)."""
        return str(self.embedded.local_path(api_key, tinker_path)) if self.embedded is not None else None


@contextmanager
def training_endpoint(base_url: str | None, base_model: str, checkpoint_dir: Path) -> Iterator[Endpoint]:
    """A shared server (``base_url``) or one started here for the duration of the block."""
    if base_url is not None:
        yield Endpoint(base_url, base_model, None)
        return
    with embedded_server(base_model, checkpoint_dir=checkpoint_dir) as server:
        yield Endpoint(server.url, server.model_name, server)


@contextmanager
def tinker_session(endpoint: Endpoint, api_key: str) -> Iterator[Any]:
    """A ``tinker.ServiceClient`` whose session is closed at the end (success, errored or
    interrupted), so its heartbeats stop before an embedded server does."""
    import tinker

    service = tinker.ServiceClient(base_url=endpoint.url, api_key=api_key)
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


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of one step: a pure function of the step, so a resumed run sees the same batches.

    Epochs are seeded shuffles of the dataset laid end to end; step ``s`` takes positions
    ``s·B … s·B + B - 1`` of that sequence.
    """
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_examples)
        order = list(range(n_examples))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        out.append(order[offset])
    return out


def prompt_tokens(tokenizer, text: str, max_tokens: int | None) -> list[int]:
    """A prompt's ids (with BOS), keeping only the last ``max_tokens`` (the question and the answer
    cue live at the end; the schema loses its start first), as the SFT recipe's ``max_length`` does."""
    ids = list(tokenizer(text)["input_ids"])
    return ids[-max_tokens:] if max_tokens is not None and len(ids) > max_tokens else ids


def with_sample_provenance(datum: types.Datum, sequence_id: str, prompt_len: int, sampled: int) -> types.Datum:
    """``datum`` (one prompt + one sample, shifted by one) naming that sample, as ``stable_reinforce`` needs.

    Inputs are the prompt and all but the last sampled token; targets are the same shifted by one,
    so they cover the prompt from its second token on, then every sampled token."""
    return datum.with_provenance(
        model_input=[types.PromptProvenanceSpan(sequence_id=sequence_id, length=prompt_len),
                     types.SampledProvenanceSpan(sequence_id=sequence_id, length=sampled - 1)],
        loss_fn_inputs=[types.PromptProvenanceSpan(sequence_id=sequence_id, offset=1, length=prompt_len - 1),
                        types.SampledProvenanceSpan(sequence_id=sequence_id, length=sampled)],
    )


def score_group(data_dir: Path, example: Example, texts: Sequence[str], variant: str,
                pool: ThreadPoolExecutor) -> list[Reward]:
    """Sandboxed rewards of one prompt's completions; the gold query runs once for the group."""
    database = db_path(data_dir, example.db_id)
    gold = execute_sql(database, example.query)
    return list(pool.map(partial(text2sql_reward, database, gold_sql=example.query, variant=variant, gold=gold),
                         texts))


def sampler_generator(sampling_client, tokenizer, max_tokens: int = 96,
                      max_prompt_tokens: int | None = None) -> SqlGenerator:
    """Greedy SQL from a Tinker sampling client; all prompts are in flight at once."""
    greedy = types.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def generate(prompts: Sequence[str]) -> list[str]:
        futures = [sampling_client.sample(types.ModelInput.from_ints(prompt_tokens(tokenizer, p, max_prompt_tokens)),
                                          1, greedy) for p in prompts]
        return [tokenizer.decode(f.result().sequences[0].tokens, skip_special_tokens=True) for f in futures]

    return generate


def evaluate_splits(generate: SqlGenerator, data_dir: Path, splits: Sequence[str], examples: int) -> dict[str, dict]:
    """Execution accuracy and valid-SQL rate on the first ``examples`` of each split."""
    out = {}
    for split in splits:
        report = evaluate_examples(generate, load_split(data_dir, split)[:examples], data_dir)
        out[split] = {"accuracy": report["accuracy"], "valid_sql": report["valid_sql"], "total": report["total"]}
    return out


def open_trainer(service, endpoint: Endpoint, *, last: dict | None, init_state: str | None, lora_rank: int,
                 seed: int, log, train_unembed: bool = True) -> tuple[object, int]:
    """(training client, first step): resumed from ``last`` (weights + optimizer), started from
    ``init_state`` (weights only: a fresh optimizer, e.g. RL after SFT), or a fresh adapter."""
    if last is not None:
        log(f"resuming from {last['state_path']} at step {last['step'] + 1}")
        return service.create_training_client_from_state_with_optimizer(last["state_path"]).result(), last["step"] + 1
    if init_state is not None:
        return service.create_training_client_from_state(init_state).result(), 0
    return service.create_lora_training_client(base_model=endpoint.base_model, rank=lora_rank, seed=seed,
                                               train_unembed=train_unembed).result(), 0


def finish(service, trainer, tokenizer, endpoint: Endpoint, run: RunLog, config, log, **extra) -> dict:
    """Saves the final adapter, evaluates it (``config.eval_examples`` per split) and writes result.json."""
    sampler_path = trainer.save_weights_for_sampler("final").result().path
    train_seconds = run.elapsed()
    evaluation = {}
    if config.eval_examples:
        client = service.create_sampling_client(model_path=sampler_path).result()
        generate = sampler_generator(client, tokenizer, max_prompt_tokens=config.max_prompt_tokens)
        evaluation = evaluate_splits(generate, Path(config.data_dir),
                                     config.eval_splits, config.eval_examples)
        log("eval: " + ", ".join(f"{s} {r['accuracy']:.3f}" for s, r in evaluation.items()))
    adapter_dir = endpoint.local_path(config.api_key, sampler_path)
    if adapter_dir is None:  # a shared server: export the adapter and fetch its files
        adapter_dir = str(download_adapter(trainer, endpoint.url, config.api_key, run.out_dir / "adapter"))
        log(f"adapter downloaded to {adapter_dir}")
    return run.result(config, sampler_path=sampler_path, adapter_dir=adapter_dir,
                      state_path=run.last_checkpoint()["state_path"], steps=config.steps, seconds=train_seconds,
                      eval=evaluation, **extra)


def download_adapter(trainer, base_url: str, api_key: str, out_dir: Path, name: str = "final") -> Path:
    """The training client's current weights as a PEFT adapter directory on this machine, through
    the Tinker API's external-weights export (``save_weights_external``, then per-file signed URLs)."""
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
