"""The sweep's second round: Optuna ask/tell over the first round's results."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetune.recipes import PPOConfig
from kubetune.steps.propose import CHOICES, FLOAT_RANGES, propose_experiments

FIRST_ROUND = [
    {"config": {"run_name": "a", "lora_rank": 16, "learning_rate": 2e-4, "kl_coef": 0.0, "group_size": 8,
                "reward": "execution"}, "score": 0.20},
    {"config": {"run_name": "b", "lora_rank": 4, "learning_rate": 2e-3, "kl_coef": 0.05, "group_size": 4,
                "reward": "shaped"}, "score": 0.31},
    {"config": {"run_name": "c"}, "score": 0.10},  # all defaults
]


def test_proposals_are_new_valid_configs_in_the_widened_space(tmp_path: Path) -> None:
    proposals = propose_experiments(FIRST_ROUND, 3, seed=1)
    assert [p["run_name"] for p in proposals] == ["round2-1", "round2-2", "round2-3"]
    seen = {tuple(sorted(r["config"].items())) for r in FIRST_ROUND}
    for p in proposals:
        assert set(p) == {"run_name", "learning_rate", "lora_rank", "kl_coef", "group_size", "reward"}
        assert tuple(sorted(p.items())) not in seen
        # Rank 4 and learning rate 2e-3 of experiment b lie outside the default space, which widens.
        assert p["lora_rank"] in {*CHOICES["lora_rank"], 4} and isinstance(p["lora_rank"], int)
        assert FLOAT_RANGES["learning_rate"][0] <= p["learning_rate"] <= 2e-3
        assert 0.0 <= p["kl_coef"] <= FLOAT_RANGES["kl_coef"][1]
        PPOConfig(data_dir=tmp_path, out_dir=tmp_path, base_url="http://unused", group_size=p["group_size"],
                  reward=p["reward"], learning_rate=p["learning_rate"],
                  kl_coef=p["kl_coef"])  # the PPO step accepts it
    assert len({tuple(sorted(p.items())) for p in proposals}) == 3  # constant liar: no duplicates in a batch


def test_same_results_and_seed_propose_the_same_configs() -> None:
    assert propose_experiments(FIRST_ROUND, 2, seed=7) == propose_experiments(FIRST_ROUND, 2, seed=7)
    assert propose_experiments(FIRST_ROUND, 2, seed=7) != propose_experiments(FIRST_ROUND, 2, seed=8)


def test_the_proposals_follow_the_scores() -> None:
    """Shaped reward always scored high, execution low: TPE should mostly ask for shaped."""
    results = [{"config": {"run_name": f"e{i}", "reward": reward, "learning_rate": lr}, "score": score}
               for i, (reward, lr, score) in enumerate([("shaped", 1e-4, 0.4), ("execution", 1e-4, 0.1),
                                                        ("shaped", 3e-4, 0.45), ("execution", 3e-4, 0.12),
                                                        ("shaped", 6e-4, 0.42), ("execution", 6e-4, 0.08),
                                                        ("shaped", 8e-5, 0.38), ("execution", 8e-5, 0.1)])]
    rewards = [p["reward"] for p in propose_experiments(results, 8, seed=0)]
    assert rewards.count("shaped") >= 6, rewards


def test_nothing_to_propose_and_bad_results_are_clear() -> None:
    assert propose_experiments(FIRST_ROUND, 0) == []
    with pytest.raises(ValueError, match="needs the first round's results"):
        propose_experiments([], 2)
    with pytest.raises(ValueError, match="'bad': learning_rate must be > 0"):
        propose_experiments([{"config": {"run_name": "bad", "learning_rate": 0.0}, "score": 0.1}], 1)
