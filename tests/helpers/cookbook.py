"""tinker-cookbook 0.6.1's own trainers (SFT, RL, DPO), unmodified, against a kubetune training server.

The harness of tests/api/test_cookbook.py and of bench/cookbook_smoke.py (the full compatibility
matrix against ``kubetune serve``): text-to-SQL data written to local JSONL files, the cookbook
config of each run, each trainer in a child process with a time limit (``python -m
helpers.cookbook --child NAME ...``, tests/ on its PYTHONPATH), so a server gap shows up as a
failed run with the tail of its log instead of a hang, and checks of the ``metrics.jsonl`` and
``checkpoints.jsonl`` the trainer writes.

Runs (a ``*_resume`` run needs its base run first):

- ``sft``: periodic + rolling checkpoints (rolling ones deleted through the RestClient), held-out
  NLL through ``save_weights_and_get_sampling_client`` + ``compute_logprobs``.
- ``sft_resume``, ``rl_resume``, ``dpo_resume``: the base run's records minus its final checkpoint,
  so the cookbook resumes from a periodic one (``load_weights`` with optimizer state).
- ``sft_from_checkpoint``: ``load_checkpoint_path`` (weights only, fresh optimizer).
- ``rl``: sync, ``importance_sampling``; ``rl_ppo``: ``ppo`` with no loss config; ``rl_kl``: KL
  penalty against a base-model sampler, post-update KL; ``rl_stream``: streaming minibatches.
- ``rl_stable``: ``stable_reinforce`` (provenance spans, ``record_stability_info``);
  ``rl_async``: ``AsyncConfig``, whose default loss is ``stable_reinforce``.
- ``dpo``: ``forward_backward_custom`` with a reference sampler.

The RL environment is the project's text-to-SQL task (reward: execution match, else a small graded
string-similarity reward so groups have non-zero advantages). The renderer is ``role_colon``: the
tiny model has no chat template, and this renderer needs none.

Requires ``pip install --no-deps tinker-cookbook==0.6.1`` plus its light dependencies (the
Makefile's install step does both).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chz
import tinker

from kubetune.tasks.text2sql import Example, build_dataset, db_path, execution_match, load_split

try:  # optional for the project: only this harness uses it
    from tinker_cookbook import renderers
    from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
    from tinker_cookbook.rl.types import (
        Action,
        ActionExtra,
        EnvGroupBuilder,
        RLDataset,
        RLDatasetBuilder,
        StepResult,
    )
    from tinker_cookbook.tokenizer_utils import get_tokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the cookbook
    raise ImportError(f"tinker-cookbook is not installed ({exc}); run `make install`") from exc

TESTS = Path(__file__).resolve().parents[1]  # on the child processes' PYTHONPATH
API_KEY = "tml-cookbook-smoke"
RENDERER = "role_colon"
DATA_SIZES = {"train": 24, "rl": 16, "heldout_values": 0, "heldout_paraphrase": 0, "heldout_database": 0}
RUNS = ("sft", "sft_resume", "sft_from_checkpoint", "rl", "rl_resume", "rl_ppo", "rl_kl", "rl_stream",
        "rl_stable", "rl_async", "dpo", "dpo_resume")


@dataclass(frozen=True)
class Settings:
    """What every trainer run shares; passed to the child processes on their command line."""

    steps: int = 3
    schema_in_prompt: bool = True  # the task's own prompt (schema + question), else the question only
    max_length: int = 256  # SFT/DPO sequence cap (the cookbook truncates)
    max_tokens: int = 24  # RL completion length
    api_key: str = API_KEY

    def argv(self) -> list[str]:
        return (["--steps", str(self.steps), "--max-length", str(self.max_length), "--max-tokens",
                 str(self.max_tokens), "--api-key", self.api_key]
                + ([] if self.schema_in_prompt else ["--question-only"]))


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    """The command-line options of :class:`Settings` (read back by :func:`settings_from_args`)."""
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--max-length", type=int, default=Settings.max_length, help="SFT/DPO sequence cap")
    parser.add_argument("--max-tokens", type=int, default=Settings.max_tokens, help="RL completion length")
    parser.add_argument("--question-only", action="store_true", help="prompts without the schema (short)")
    parser.add_argument("--api-key", default=API_KEY, help="a tml- key the server accepts")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(steps=args.steps, schema_in_prompt=not args.question_only, max_length=args.max_length,
                    max_tokens=args.max_tokens, api_key=args.api_key)


def user_prompt(example: Example, data_dir: str | Path, schema_in_prompt: bool) -> str:
    return example.prompt(data_dir) if schema_in_prompt else example.question


# ----------------------------------------------------------------------------- data (local JSONL)
def corrupt(sql: str) -> str:
    """A plausible but wrong query: the rejected side of a DPO pair."""
    for old, new in (("MAX(", "MIN("), ("SUM(", "AVG("), ("COUNT(", "MAX("), (" = ", " != "), (" > ", " < ")):
        if old in sql:
            return sql.replace(old, new, 1)
    return sql.rstrip(";") + " LIMIT 0;"


def write_data(data_dir: Path, schema_in_prompt: bool) -> None:
    """Text-to-SQL task files in the formats the cookbook's local builders read."""
    build_dataset(data_dir, seed=0, sizes=DATA_SIZES)
    train = load_split(data_dir, "train")
    sft = data_dir / "sft.jsonl"
    sft.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": user_prompt(ex, data_dir, schema_in_prompt)},
        {"role": "assistant", "content": ex.query}]}) + "\n"
        for ex in train))
    dpo = data_dir / "dpo.jsonl"
    dpo.write_text("".join(json.dumps({"comparison": {
        "prompt_conversation": [{"role": "user", "content": user_prompt(ex, data_dir, schema_in_prompt)}],
        "completion_A": [{"role": "assistant", "content": ex.query}],
        "completion_B": [{"role": "assistant", "content": corrupt(ex.query)}]}, "label": "A"}) + "\n"
        for ex in train))


# ----------------------------------------------------------------------------- RL environment
class Text2SqlEnv(ProblemEnv):
    """One question; reward 1 when the completion's SQL returns the gold result on the database.

    Otherwise a small graded reward (string similarity to the gold query), so a group of rollouts
    from a tiny model has unequal rewards, non-zero advantages and a real gradient.
    """

    def __init__(self, renderer: renderers.Renderer, example: Example, data_dir: str, schema_in_prompt: bool):
        super().__init__(renderer, format_coef=0.0, require_stop_sequence_for_format=False)
        self.example = example
        self.data_dir = data_dir
        self.schema_in_prompt = schema_in_prompt

    def get_question(self) -> str:
        return user_prompt(self.example, self.data_dir, self.schema_in_prompt)

    def check_answer(self, sample_str: str) -> bool:
        db = db_path(self.data_dir, self.example.db_id)
        return execution_match(db, sample_str.strip(), self.example.query, timeout_s=0.5)

    def check_format(self, sample_str: str) -> bool:
        return sample_str.strip().upper().startswith("SELECT")

    def get_reference_answer(self) -> str:
        return self.example.query

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        message, _ = self.renderer.parse_response(action)
        content = renderers.get_text_content(message)
        correct = self.check_answer(content)
        gold = self.example.query.lower()
        similarity = difflib.SequenceMatcher(None, content.strip().lower(), gold).ratio()
        return StepResult(reward=1.0 if correct else 0.5 * similarity, episode_done=True,
                          next_observation=tinker.ModelInput.empty(), next_stop_condition=self.stop_condition,
                          metrics={"correct": float(correct), "sql_format": float(self.check_format(content)),
                                   "similarity": similarity})


@dataclass
class Text2SqlRLDataset(RLDataset):
    builders: list[EnvGroupBuilder]
    groups_per_batch: int

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        return self.builders[index * self.groups_per_batch:(index + 1) * self.groups_per_batch]

    def __len__(self) -> int:
        return len(self.builders) // self.groups_per_batch


@chz.chz
class Text2SqlRLDatasetBuilder(RLDatasetBuilder):
    """The ``rl`` split of a generated task directory, ``group_size`` rollouts per question."""

    data_dir: str
    model_name: str
    schema_in_prompt: bool = True
    groups_per_batch: int = 2
    group_size: int = 4

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        renderer = renderers.get_renderer(RENDERER, get_tokenizer(self.model_name))

        def env_thunk(example: Example) -> Callable[[], ProblemEnv]:
            return lambda: Text2SqlEnv(renderer, example, self.data_dir, self.schema_in_prompt)

        builders: list[EnvGroupBuilder] = [
            ProblemGroupBuilder(env_thunk(ex), self.group_size, dataset_name="text2sql")
            for ex in load_split(self.data_dir, "rl")]
        return Text2SqlRLDataset(builders, self.groups_per_batch), None


# ----------------------------------------------------------------------------- one trainer (child)
def base_run(name: str) -> str:
    """``sft_resume`` -> ``sft``: a resume run reuses its base run's config and (a copy of) its log dir."""
    return name.removesuffix("_resume")


def prepare_resume(name: str, work: Path) -> None:
    """Copies the base run's records, minus its final checkpoint, as if it had stopped after a
    periodic save: the cookbook then resumes from that checkpoint with optimizer state."""
    src, dst = work / "logs" / base_run(name), work / "logs" / name
    dst.mkdir(parents=True, exist_ok=True)
    kept = [r for r in read_jsonl(src / "checkpoints.jsonl") if r.get("name") != "final"]
    if not any(r.get("state_path") for r in kept):
        raise RuntimeError(f"{src} has no periodic checkpoint to resume from")
    (dst / "checkpoints.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    shutil.copy(src / "metrics.jsonl", dst / "metrics.jsonl")


def chat_common(model: str, settings: Settings):
    """The chat-dataset settings of the SFT and DPO runs."""
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    return ChatDatasetBuilderCommonConfig(model_name_for_tokenizer=model, renderer_name=RENDERER,
                                          max_length=settings.max_length, batch_size=4)


def sft_config(base: str, shared: dict[str, Any], work: Path, settings: Settings):
    from tinker_cookbook.supervised import train as sl_train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder

    load = last_checkpoint(work / "logs" / "sft")["state_path"] if base == "sft_from_checkpoint" else None
    dataset = FromConversationFileBuilder(common_config=chat_common(shared["model_name"], settings),
                                          file_path=str(work / "data" / "sft.jsonl"), test_size=4)
    return sl_train.Config(**shared, load_checkpoint_path=load, dataset_builder=dataset, rolling_save_every=1,
                           eval_every=2)


def rl_config(base: str, shared: dict[str, Any], work: Path, settings: Settings):
    from tinker_cookbook.rl import train as rl_train

    model = shared["model_name"]
    variant: dict[str, Any] = {
        "rl": {},
        "rl_ppo": {"loss_fn": "ppo"},  # no loss_fn_config: the server's default clip thresholds
        "rl_kl": {"kl_penalty_coef": 0.01, "compute_post_kl": True,
                  "kl_reference_config": rl_train.KLReferenceConfig(base_model=model)},
        "rl_stream": {"stream_minibatch_config": rl_train.StreamMinibatchConfig(groups_per_batch=2,
                                                                                num_minibatches=2)},
        "rl_stable": {"loss_fn": "stable_reinforce"},
        "rl_async": {"async_config": rl_train.AsyncConfig(max_steps_off_policy=1, groups_per_batch=2)},
    }[base]
    dataset = Text2SqlRLDatasetBuilder(data_dir=str(work / "data"), model_name=model,
                                       schema_in_prompt=settings.schema_in_prompt)
    return rl_train.Config(**shared, max_tokens=settings.max_tokens, dataset_builder=dataset, eval_every=0,
                           num_groups_to_log=1, **variant)


def dpo_config(shared: dict[str, Any], work: Path, settings: Settings):
    from tinker_cookbook.preference import train_dpo
    from tinker_cookbook.preference.dpo_datasets import DPODatasetBuilderFromComparisons
    from tinker_cookbook.preference.preference_datasets import ComparisonBuilderFromJsonl

    comparisons = ComparisonBuilderFromJsonl(train_path=str(work / "data" / "dpo.jsonl"))
    dataset = DPODatasetBuilderFromComparisons(common_config=chat_common(shared["model_name"], settings),
                                               comparison_builder=comparisons)
    return train_dpo.Config(**shared, dataset_builder=dataset)


def run_trainer(name: str, model: str, base_url: str, work: Path, settings: Settings) -> None:
    """Builds the cookbook config for run ``name`` and calls the cookbook's own ``main``."""
    from tinker_cookbook.preference import train_dpo
    from tinker_cookbook.rl import train as rl_train
    from tinker_cookbook.supervised import train as sl_train

    if name not in RUNS:
        raise SystemExit(f"unknown run {name!r}; expected one of {', '.join(RUNS)}")
    if name.endswith("_resume"):
        prepare_resume(name, work)
    base = base_run(name)
    shared: dict[str, Any] = dict(log_path=str(work / "logs" / name), model_name=model,
                                  recipe_name="kubetune_cookbook_smoke", base_url=base_url,
                                  renderer_name=RENDERER, lora_rank=4, learning_rate=1e-3,
                                  max_steps=settings.steps, save_every=2)
    if base.startswith("sft"):
        asyncio.run(sl_train.main(sft_config(base, shared, work, settings)))
    elif base.startswith("rl"):
        asyncio.run(rl_train.main(rl_config(base, shared, work, settings)))
    else:
        train_dpo.main(dpo_config(shared, work, settings))


# ----------------------------------------------------------------------------- checks
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_checkpoint(log_dir: Path) -> dict[str, Any]:
    records = [r for r in read_jsonl(log_dir / "checkpoints.jsonl") if r.get("state_path")]
    if not records:
        raise RuntimeError(f"no checkpoint with a state_path in {log_dir}")
    return records[-1]


def metric_key(name: str) -> str:
    """One metric each loop writes for every step it trains."""
    base = base_run(name)
    if base == "dpo":
        return "dpo_loss"
    return "train_mean_nll" if base.startswith("sft") else "env/all/reward/total"


def check_run(name: str, work: Path, steps: int, log_text: str) -> list[str]:
    """Problems with what the trainer wrote; empty when the run did what it should."""
    log_dir = work / "logs" / name
    problems: list[str] = []
    metrics = read_jsonl(log_dir / "metrics.jsonl")
    key = metric_key(name)
    values = [row[key] for row in metrics if key in row]
    if len(values) < steps:
        problems.append(f"metrics.jsonl has {len(values)} {key!r} rows, expected {steps}")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        problems.append(f"non-finite {key!r}: {values}")
    if name.startswith("rl") and not any(row.get("optim/grad_norm", 0.0) > 0 for row in metrics):
        problems.append("every RL step had a zero gradient (no reward spread in any group)")
    if name.endswith("_resume"):
        if "Resumed training from" not in log_text and "Resumed DPO training from" not in log_text:
            problems.append("did not resume from the periodic checkpoint")
    if name == "sft_resume":  # resumed with optimizer state: the server's Adam step count carries on
        resumed = [row for row in metrics if row.get("step", -1) >= 2 and "optim/step" in row]
        if not resumed or resumed[-1]["optim/step"] < 2:
            steps_seen = [r.get("optim/step") for r in resumed]
            problems.append(f"optimizer state not restored on resume: {steps_seen}")
    records = read_jsonl(log_dir / "checkpoints.jsonl")
    final = [r for r in records if r.get("name") == "final"]
    if not final or not str(final[-1].get("state_path", "")).startswith("tinker://") \
            or not str(final[-1].get("sampler_path", "")).startswith("tinker://"):
        problems.append(f"no final checkpoint with tinker:// state and sampler paths: {records}")
    return problems


def summarize(name: str, work: Path) -> str:
    rows = read_jsonl(work / "logs" / name / "metrics.jsonl")
    shown = [f"{k}=" + ",".join(f"{r[k]:.3g}" for r in rows if k in r)
             for k in (metric_key(name), "optim/grad_norm") if any(k in r for r in rows)]
    return " ".join(shown)


# ----------------------------------------------------------------------------- the server (parent)
def child_env(api_key: str = API_KEY) -> dict[str, str]:
    """Offline, the API key the cookbook's ``ServiceClient`` reads (it passes none itself), and
    tests/ on PYTHONPATH, where the children import this harness from."""
    env = dict(os.environ)
    env.update(TINKER_API_KEY=api_key, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def advertised_model(base_url: str, api_key: str) -> str:
    """The one model name the server advertises (what the cookbook hands to ``AutoTokenizer`` and
    ``create_lora_training_client``)."""
    capabilities = tinker.RestClient(base_url=base_url, api_key=api_key).get_server_capabilities().result()
    names = [m.model_name for m in capabilities.supported_models if m.model_name]
    if len(names) != 1:
        raise RuntimeError(f"expected one served model, got {names}")
    return names[0]


def refused_requests(base_url: str) -> list[str]:
    """Requests the server answered with a non-2xx status (from its Prometheus ``/metrics``): the SDK
    swallows some of these (telemetry, dynamic config), so a run can pass with a gap underneath."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []
    return [line for line in text.splitlines()
            if line.startswith("kubetune_api_requests_total{") and 'outcome="2xx"' not in line]


@dataclass
class Outcome:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    problems: list[str] = field(default_factory=list)


def run_child(name: str, model: str, base_url: str, work: Path, settings: Settings,
              timeout_s: float) -> Outcome:
    """Runs one trainer in a child process (a hang is killed at ``timeout_s``) and checks its files."""
    log = work / f"{name}.log"
    cmd = [sys.executable, "-m", "helpers.cookbook", "--child", name, "--model", model,
           "--base-url", base_url, "--work", str(work), *settings.argv()]
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(settings.api_key),
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    if rc != 0:
        why = f"timed out after {timeout_s:.0f} s" if rc is None else f"exit code {rc}"
        return Outcome(name, False, seconds, why, ["\n".join(text.splitlines()[-25:])])
    problems = check_run(name, work, settings.steps, text)
    return Outcome(name, not problems, seconds, summarize(name, work), problems)


def run_matrix(runs: Sequence[str], model: str, base_url: str, work: Path, settings: Settings,
               timeout_s: float, log: Callable[[str], None] = print) -> list[Outcome]:
    """Runs ``runs`` one after another (data already written to ``work/data``), logging a PASS or
    FAIL row for each, with its problems."""
    outcomes = []
    for name in runs:
        outcome = run_child(name, model, base_url, work, settings, timeout_s)
        outcomes.append(outcome)
        log(f"{'PASS' if outcome.ok else 'FAIL'}  {name:<20} {outcome.seconds:6.1f} s  {outcome.detail}")
        for problem in outcome.problems:
            log("      " + problem.replace("\n", "\n      "))
    return outcomes


def child_main(argv: list[str] | None = None) -> None:
    """``python -m helpers.cookbook --child NAME ...``: one trainer, in the child process."""
    parser = argparse.ArgumentParser(description="one cookbook trainer run (a child of run_child)")
    parser.add_argument("--child", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--work", type=Path, required=True)
    add_settings_args(parser)
    args = parser.parse_args(argv)
    run_trainer(args.child, args.model, args.base_url, args.work, settings_from_args(args))


if __name__ == "__main__":
    child_main()
