"""The PPO (GRPO-style) recipe through a real `kubetune serve` and the official SDK.

The tiny random test model cannot write SQL, so end-to-end runs use a custom reward (a function of
the completion text) that varies within a group; the advantage and loss arithmetic is checked
against an independent computation on hand-built groups.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tinker
from tinker import types

from kubetune.recipes import PPOConfig, run_ppo
from kubetune.recipes.data import rl_datum
from kubetune.recipes.ppo import Rollout, _train_step, group_advantages
from kubetune.tasks.text2sql import build_dataset

from helpers.server import ApiServer

SIZES = {"train": 10, "rl": 12, "heldout_values": 4, "heldout_paraphrase": 4, "heldout_database": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ppo") / "data"
    build_dataset(path, sizes=SIZES)
    return path


def length_reward(example, completion: str) -> float:
    """Varies within a group of random samples: a stand-in for a task reward in plumbing tests."""
    return float(len(completion) % 3)


def config(api_server: ApiServer, data: Path, out: Path, **overrides) -> PPOConfig:
    settings = dict(data_dir=data, out_dir=out, base_url=api_server.url, base_model=str(api_server.model_dir),
                    api_key=api_server.keys["alice"], steps=3, prompts_per_step=2, group_size=4,
                    learning_rate=5e-2, max_tokens=6, max_prompt_tokens=100, lora_rank=4, save_every=0,
                    eval_examples=0, reward_fn=length_reward)
    settings.update(overrides)
    return PPOConfig(**settings)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_group_advantages_are_normalised_within_the_group() -> None:
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0]
    mean, std = np.mean(rewards), np.std(rewards)
    assert group_advantages(rewards) == pytest.approx([(r - mean) / std for r in rewards], abs=1e-5)
    assert group_advantages([0.3, 0.3, 0.3]) is None  # no signal: the group is dropped


def test_rl_datum_aligns_advantages_with_completion_tokens() -> None:
    datum = rl_datum([5, 6, 7], [8, 9], [-0.5, -0.25], [2.0, 2.0])
    assert datum.model_input.to_ints() == [5, 6, 7, 8]
    assert datum.loss_fn_inputs["target_tokens"].to_numpy().tolist() == [6, 7, 8, 9]
    assert datum.loss_fn_inputs["advantages"].to_numpy().tolist() == [0.0, 0.0, 2.0, 2.0]
    assert datum.loss_fn_inputs["logprobs"].to_numpy().tolist() == [0.0, 0.0, -0.5, -0.25]


def test_train_step_loss_and_kl_match_an_independent_computation(api_server: ApiServer) -> None:
    """On-policy (ratio 1) the ppo loss is -Σ A_t over completion tokens; with a fresh adapter
    (LoRA B = 0) the policy is the base model, so the KL to the reference is 0."""
    service = api_server.client()
    trainer = service.create_lora_training_client(base_model=str(api_server.model_dir), rank=4,
                                                  seed=0).result()
    sampler = trainer.save_weights_and_get_sampling_client().result()
    reference = service.create_sampling_client(base_model=str(api_server.model_dir)).result()
    prompt = [2, 40, 41, 42, 43]
    samples = sampler.sample(types.ModelInput.from_ints(prompt), 4,
                             types.SamplingParams(max_tokens=5, seed=1)).result()
    rewards = [1.0, 0.0, 1.0, 0.0]
    group = [Rollout(prompt, list(s.tokens), list(s.logprobs), r, bool(r), True)
             for s, r in zip(samples.sequences, rewards, strict=True)]
    still = [Rollout(prompt, list(s.tokens), list(s.logprobs), 0.5, False, True) for s in samples.sequences]
    cfg = PPOConfig(data_dir=Path("."), out_dir=Path("."), base_url="http://unused", kl_coef=0.1)
    row = _train_step(trainer, reference, [group, still], cfg,
                      {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2})

    advantages = group_advantages(rewards)
    n_tokens = sum(len(r.tokens) for r in group)
    expected = -sum(a * len(r.tokens) for a, r in zip(advantages, group, strict=True)) / n_tokens
    assert row["loss"] == pytest.approx(expected, abs=2e-3)
    assert row["kl"] == pytest.approx(0.0, abs=1e-4)
    assert row["trained_sequences"] == 4  # the second group agreed and was dropped
    assert row["mixed_groups"] == 0.5
    assert row["clip_fraction"] == 0.0 and row["grad_norm"] > 0
    assert row["reward_mean"] == pytest.approx(np.mean(rewards + [0.5] * 4))


def test_ppo_run_trains_logs_and_resumes_exactly(api_server: ApiServer, data: Path, tmp_path: Path) -> None:
    straight = run_ppo(config(api_server, data, tmp_path / "straight", save_every=1), log=lambda _: None)
    metrics = rows(tmp_path / "straight" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for key in ("reward_mean", "reward_std", "mixed_groups", "kl", "entropy", "clip_fraction",
                "completion_tokens"):
        assert all(isinstance(m[key], float) for m in metrics), key
    assert any(m["trained_sequences"] > 0 for m in metrics)
    assert straight["sampler_path"].endswith("/sampler_weights/final")
    saved = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert saved["config"]["reward_fn"].endswith("length_reward")

    interrupted = tmp_path / "interrupted"
    run_ppo(config(api_server, data, interrupted, save_every=1), log=lambda _: None)
    records = (interrupted / "checkpoints.jsonl").read_text().splitlines()
    (interrupted / "checkpoints.jsonl").write_text(records[0] + "\n")  # as if stopped after step 0
    run_ppo(config(api_server, data, interrupted, save_every=1, resume=True), log=lambda _: None)
    resumed = rows(interrupted / "metrics.jsonl")[-2:]
    assert [r["step"] for r in resumed] == [1, 2]
    for key in ("loss", "reward_mean", "entropy"):
        assert [r[key] for r in resumed] == [m[key] for m in metrics[1:]], key


def test_stable_reinforce_runs_end_to_end(api_server: ApiServer, data: Path, tmp_path: Path) -> None:
    run_ppo(config(api_server, data, tmp_path, steps=2, loss="stable_reinforce"), log=lambda _: None)
    metrics = rows(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]
    assert any(m["trained_sequences"] > 0 and m["loss"] != 0.0 for m in metrics)


def test_ppo_starts_from_a_saved_state(api_server: ApiServer, data: Path, tmp_path: Path) -> None:
    """init_state loads weights only (RL after SFT): the first snapshot samples like the saved policy."""
    service = api_server.client()
    sft = service.create_lora_training_client(base_model=str(api_server.model_dir), rank=2, seed=3).result()
    state = sft.save_state("init").result().path
    result = run_ppo(config(api_server, data, tmp_path, steps=1, init_state=state), log=lambda _: None)
    rest = tinker.RestClient(base_url=api_server.url, api_key=api_server.keys["alice"])
    info = rest.get_training_run_by_tinker_path(result["state_path"]).result()
    assert info.lora_rank == 2  # the state's adapter, not a fresh rank-4 one


def test_bad_configs_are_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="reward must be one of"):
        PPOConfig(data_dir=Path("."), out_dir=Path("."), base_url="http://unused", reward="accuracy")
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        PPOConfig(data_dir=Path("."), out_dir=Path("."), base_url="http://unused", group_size=1)
    with pytest.raises(ValueError, match="clip_low <= 1 <= clip_high"):
        PPOConfig(data_dir=Path("."), out_dir=Path("."), base_url="http://unused", clip_low=1.5)


@pytest.mark.parametrize("loss", ["ppo", "stable_reinforce"])
def test_an_update_moves_probability_towards_rewarded_samples(api_server: ApiServer, loss: str) -> None:
    """After one step, samples with positive advantage are more likely and the others less."""
    service = api_server.client()
    trainer = service.create_lora_training_client(base_model=str(api_server.model_dir), rank=4,
                                                  seed=2).result()
    sampler = trainer.save_weights_and_get_sampling_client(
        record_stability_info=loss == "stable_reinforce").result()
    prompt = [2, 50, 51, 52]
    samples = sampler.sample(types.ModelInput.from_ints(prompt), 6,
                             types.SamplingParams(max_tokens=4, seed=7)).result()
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    group = [Rollout(prompt, list(s.tokens), list(s.logprobs), r, bool(r), True, s.sequence_id)
             for s, r in zip(samples.sequences, rewards, strict=True)]
    cfg = PPOConfig(data_dir=Path("."), out_dir=Path("."), base_url="http://unused", learning_rate=2e-2,
                    loss=loss)
    row = _train_step(trainer, None, [group], cfg, None)
    assert row["trained_sequences"] == 6 and row["loss"] != 0.0
    after = trainer.save_weights_and_get_sampling_client().result()

    def sequence_logprob(client, rollout: Rollout) -> float:
        lps = client.compute_logprobs(types.ModelInput.from_ints(rollout.prompt + rollout.tokens)).result()
        return float(sum(lps[len(rollout.prompt):]))

    deltas = [sequence_logprob(after, r) - sum(r.logprobs) for r in group]
    assert all(d > 0 for d, r in zip(deltas, rewards, strict=True) if r == 1.0), deltas
    assert all(d < 0 for d, r in zip(deltas, rewards, strict=True) if r == 0.0), deltas
