"""GRPO-style PPO over the Tinker API: sample a group per prompt, score, normalise within the group, update.

One step, as a plain loop over the official ``tinker`` SDK:

1. ``save_weights_and_get_sampling_client`` snapshots the current policy;
2. ``prompts_per_step`` prompts of the ``rl`` split (wordings SFT never saw; their gold SQL only
   computes rewards) each get ``group_size`` samples;
3. every completion is scored by the task's reward variant from the :mod:`kubetune.reward`
   registry (text-to-SQL: sandboxed execution against the gold query);
4. advantages are the group-normalised rewards ``(r - mean) / (std + eps)``; groups whose rewards
   are all equal carry no signal and are dropped;
5. optional KL penalty to the reference, the base model with the adapter off (no second model):
   each completion token's advantage is reduced by ``kl_coef · (log q - log p_ref)``;
6. ``forward_backward`` with ``ppo`` (clipped ratio), ``importance_sampling`` or ``stable_reinforce``
   (the sampler records its samples, each datum names its sample by provenance spans), advantages
   divided by the batch's completion-token count (a token mean), then ``optim_step``.

Logged per step: reward mean/std, accuracy, valid-SQL rate, fraction of mixed groups, KL, entropy
(mean negative log-probability of the sampled tokens), clip fraction, completion length, loss.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tinker import types

from ..reward import reward_task
from ..tasks.text2sql import Example, Reward, load_split
from .common import RunLog, RunSettings, finish, open_trainer, served_model, should_save, tinker_session
from .data import batch_indices, prompt_tokens, rl_datum

ADVANTAGE_EPS = 1e-6
LOSSES = ("ppo", "importance_sampling", "stable_reinforce")


@dataclass
class PPOConfig(RunSettings):
    """GRPO-style RL on the dataset's `rl` split (its gold SQL only computes rewards)."""

    init_state: str | None = None  # tinker:// state to start from (e.g. SFT's final); None: a fresh adapter
    steps: int = 150
    prompts_per_step: int = 4
    group_size: int = 8  # samples per prompt
    learning_rate: float = 2e-4  # constant; 1e-3 made the tiny model's rewards fall (docs/recipes.md)
    # stable_reinforce: truncated-importance REINFORCE on the server's own sampling record (docs/server.md)
    loss: Literal["ppo", "importance_sampling", "stable_reinforce"] = "ppo"
    clip_low: float = 0.8  # ppo's ratio bounds (Tinker's defaults)
    clip_high: float = 1.2
    kl_coef: float = 0.0  # penalty towards the base model (adapter off); 0 skips the reference pass
    task: str = "text2sql"  # whose rewards score the samples (kubetune.reward registry)
    reward: str = "execution"  # the task's reward variant: execution | shaped | format
    # A custom reward, (example, completion text) -> float, replacing `reward` (e.g. another task's).
    reward_fn: Callable[[Example, str], float] | None = None
    temperature: float = 1.0
    max_tokens: int = 64  # new tokens per sample

    def __post_init__(self) -> None:
        reward_task(self.task).check_variant(self.reward)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2: advantages compare samples of one prompt")
        if not 0.0 <= self.clip_low <= 1.0 <= self.clip_high:
            raise ValueError(f"need 0 <= clip_low <= 1 <= clip_high; got {self.clip_low}, {self.clip_high}")


def group_advantages(rewards: list[float]) -> list[float] | None:
    """``(r - mean) / (std + eps)`` within one group; None when every reward is the same (no signal)."""
    values = np.asarray(rewards, dtype=np.float64)
    std = values.std()
    if std < ADVANTAGE_EPS:
        return None
    return ((values - values.mean()) / (std + ADVANTAGE_EPS)).tolist()


@dataclass
class Rollout:
    prompt: list[int]
    tokens: list[int]
    logprobs: list[float]
    reward: float
    correct: bool
    valid: bool
    sequence_id: str | None = None  # set by samplers made with record_stability_info


def _rollouts(sampler, tokenizer, examples: list[Example], data_dir: Path, config: PPOConfig,
              step: int, pool: ThreadPoolExecutor) -> list[list[Rollout]]:
    """One group of scored samples per example."""
    prompts = [prompt_tokens(tokenizer, ex.prompt(data_dir), config.max_prompt_tokens) for ex in examples]
    # Seeded by (seed, step, prompt): a resumed run samples exactly what an uninterrupted one did.
    futures = [sampler.sample(types.ModelInput.from_ints(p), config.group_size, types.SamplingParams(
        max_tokens=config.max_tokens, temperature=config.temperature,
        seed=(config.seed * 1_000_003 + step) * 64 + i))
        for i, p in enumerate(prompts)]
    groups = []
    for example, prompt, future in zip(examples, prompts, futures, strict=True):
        sequences = future.result().sequences
        texts = [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in sequences]
        if config.reward_fn is not None:
            rewards = [Reward(float(config.reward_fn(example, text)), "", True, False) for text in texts]
        else:
            rewards = reward_task(config.task).score_group(data_dir, example, texts, config.reward, pool)
        groups.append([Rollout(prompt, list(s.tokens), list(s.logprobs), r.value, r.correct, r.valid,
                               s.sequence_id)
                       for s, r in zip(sequences, rewards, strict=True)])
    return groups


def run_ppo(config: PPOConfig, log=print) -> dict:
    """Trains, checkpoints, evaluates and returns the result (also written to ``out_dir/result.json``)."""
    run = RunLog(config.out_dir, config.resume)
    data_dir = Path(config.data_dir)
    examples = load_split(data_dir, "rl")
    if not examples:
        raise ValueError(f"{data_dir} has no `rl` split examples to take prompts from")
    loss_config = {"clip_low_threshold": config.clip_low, "clip_high_threshold": config.clip_high} \
        if config.loss == "ppo" else None
    with (tinker_session(config.base_url, config.api_key) as service,
          ThreadPoolExecutor(max_workers=4) as pool):
        trainer, start = open_trainer(service, config, run, log, init_state=config.init_state)
        tokenizer = trainer.get_tokenizer()
        reference = service.create_sampling_client(base_model=served_model(config)).result() \
            if config.kl_coef else None
        for step in range(start, config.steps):
            indices = batch_indices(step, len(examples), config.prompts_per_step, config.seed)
            batch = [examples[i] for i in indices]
            sampler = trainer.save_weights_and_get_sampling_client(
                record_stability_info=config.loss == "stable_reinforce").result()
            groups = _rollouts(sampler, tokenizer, batch, data_dir, config, step, pool)
            row = _train_step(trainer, reference, groups, config, loss_config)
            row.update(step=step, seconds=run.elapsed())
            run.metrics(row)
            if step % 10 == 0 or step == config.steps - 1:
                log(f"step {step:4d}  reward {row['reward_mean']:.3f}  acc {row['accuracy']:.3f}  "
                    f"mixed {row['mixed_groups']:.2f}  kl {row['kl']:.4f}  {row['seconds']:6.1f} s")
            if name := should_save(step, config.steps, config.save_every):
                run.checkpoint(step, name, trainer.save_state(name).result().path)
        return finish(service, trainer, tokenizer, run, config, log)


def _train_step(trainer, reference, groups: list[list[Rollout]], config: PPOConfig,
                loss_config: dict[str, float] | None) -> dict:
    """Advantages, optional KL shaping, one forward_backward + optim_step; returns the step's metrics."""
    flat = [r for group in groups for r in group]
    rewards = [r.reward for r in flat]
    kept: list[tuple[Rollout, float]] = []
    mixed = 0
    for group in groups:
        advantages = group_advantages([r.reward for r in group])
        if advantages is not None:
            mixed += 1
            kept.extend(zip(group, advantages, strict=True))
    row = {
        "reward_mean": float(np.mean(rewards)), "reward_std": float(np.std(rewards)),
        "accuracy": float(np.mean([r.correct for r in flat])),
        "valid_sql": float(np.mean([r.valid for r in flat])),
        "mixed_groups": mixed / len(groups),
        "completion_tokens": float(np.mean([len(r.tokens) for r in flat])),
        "entropy": -float(np.mean([lp for r in flat for lp in r.logprobs])) if flat else 0.0,
        "kl": 0.0, "clip_fraction": 0.0, "loss": 0.0, "grad_norm": None, "trained_sequences": len(kept),
    }
    if not kept:  # every group agreed: nothing to learn from this batch, and no update
        return row
    kl_per_token = [np.zeros(len(r.tokens)) for r, _ in kept]
    if reference is not None:
        futures = [reference.compute_logprobs(types.ModelInput.from_ints(r.prompt + r.tokens))
                   for r, _ in kept]
        for i, ((rollout, _), future) in enumerate(zip(kept, futures, strict=True)):
            ref = np.asarray(future.result()[len(rollout.prompt):], dtype=np.float64)
            kl_per_token[i] = np.asarray(rollout.logprobs, dtype=np.float64) - ref
        row["kl"] = float(np.mean(np.concatenate(kl_per_token)))
    n_tokens = sum(len(r.tokens) for r, _ in kept)
    provenance = config.loss == "stable_reinforce"
    data = [rl_datum(r.prompt, r.tokens, r.logprobs, list((advantage - config.kl_coef * kl) / n_tokens),
                     r.sequence_id if provenance else None)
            for (r, advantage), kl in zip(kept, kl_per_token, strict=True)]
    fwd = trainer.forward_backward(data, config.loss, loss_config)
    opt = trainer.optim_step(types.AdamParams(learning_rate=config.learning_rate, grad_clip_norm=1.0))
    output = fwd.result()
    row["loss"] = output.metrics["loss:sum"]
    row["clip_fraction"] = _clip_fraction(output, kept, config)
    row["grad_norm"] = opt.result().metrics.get("optim/grad_norm")
    return row


def _clip_fraction(output: types.ForwardBackwardOutput, kept: list[tuple[Rollout, float]],
                   config: PPOConfig) -> float:
    """Fraction of completion tokens whose ratio ``exp(log p - log q)`` lies outside the clip range."""
    outside = total = 0
    for (rollout, _), out in zip(kept, output.loss_fn_outputs, strict=True):
        current = out["logprobs"].to_numpy()[-len(rollout.tokens):]
        ratio = np.exp(current - np.asarray(rollout.logprobs))
        outside += int(((ratio < config.clip_low) | (ratio > config.clip_high)).sum())
        total += len(rollout.tokens)
    return outside / total if total else 0.0
