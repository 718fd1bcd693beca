"""The DPO recipe through a real `kubetune serve` and the official SDK: loss, reference, pairs, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tinker import types

from kubetune.losses import dpo_loss
from kubetune.recipes import DPOConfig, run_dpo
from kubetune.recipes.data import tokenize_pair
from kubetune.tasks.text2sql import build_dataset, load_split

from helpers.data import sft_datum
from helpers.server import ApiServer

SIZES = {"train": 10, "rl": 8, "heldout_values": 4, "heldout_paraphrase": 4, "heldout_database": 4}
PAIRS = [
    {"prompt": "count the rows in the orders table", "chosen": " SELECT COUNT(*) FROM orders;",
     "rejected": " the quick brown fox"},
    {"prompt": "select name from users", "chosen": " where age > 30;",
     "rejected": " jumps over the lazy dog."},
    {"prompt": "SELECT COUNT(*) FROM singer", "chosen": " WHERE country = 'France';",
     "rejected": " grouped by city."},
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dpo") / "data"
    build_dataset(path, sizes=SIZES)
    return path


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.in.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return path


def config(api_server: ApiServer, data: Path, out: Path, **overrides) -> DPOConfig:
    settings = dict(data_dir=data, out_dir=out, base_url=api_server.url, base_model=str(api_server.model_dir),
                    api_key=api_server.keys["alice"], steps=4, batch_size=2, learning_rate=5e-2, lora_rank=4,
                    save_every=0, eval_examples=0, max_tokens=6, max_prompt_tokens=60, beta=0.1,
                    nll_weight=0.0)
    settings.update(overrides)
    return DPOConfig(**settings)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dpo_loss_matches_the_formula() -> None:
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    per_pair, parts = dpo_loss(pc, pr, rc, rr, beta=0.5)
    margins = [0.5 * ((-3.0 + 3.5) - (-4.0 + 3.0)), 0.5 * ((-5.0 + 4.0) - (-2.0 + 3.0))]  # 0.75, -1.0
    assert per_pair.tolist() == pytest.approx([math.log1p(math.exp(-m)) for m in margins], rel=1e-6)
    assert parts["margin"].tolist() == pytest.approx(margins)
    assert parts["chosen_reward"].tolist() == pytest.approx([0.5 * 0.5, 0.5 * -1.0])
    # RPO's anchor: + weight × the chosen answer's mean NLL (summed log-prob / its token count).
    anchored, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, nll_weight=2.0, chosen_tokens=torch.tensor([3.0, 5.0]))
    assert (anchored - per_pair).tolist() == pytest.approx([2.0 * 3.0 / 3, 2.0 * 5.0 / 5], rel=1e-6)


def test_dpo_from_a_pairs_file_starts_at_log2_and_learns(api_server: ApiServer, data: Path, pairs_file: Path,
                                                          tmp_path: Path) -> None:
    """Policy = snapshot reference at step 0, so every margin is 0 and the loss is exactly ln 2."""
    result = run_dpo(config(api_server, data, tmp_path, pairs_file=pairs_file, steps=6), log=lambda _: None)
    metrics = rows(tmp_path / "metrics.jsonl")
    assert metrics[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert metrics[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert metrics[-1]["dpo_loss"] < 0.66 and metrics[-1]["reward_margin"] > 0.05, metrics
    assert result["pairs"] == 3 and result["sampler_path"].endswith("/sampler_weights/final")
    stored = rows(tmp_path / "pairs.jsonl")
    tokenizer = api_server.client().create_lora_training_client(
        base_model=str(api_server.model_dir), rank=1).result().get_tokenizer()
    assert stored[0]["chosen"] == tokenize_pair(tokenizer, PAIRS[0]["prompt"], PAIRS[0]["chosen"]).completion


def test_server_dpo_loss_equals_the_client_side_one(api_server: ApiServer, data: Path, pairs_file: Path,
                                                    tmp_path: Path) -> None:
    """kubetune's one-pass `dpo` loss and the SDK's forward_backward_custom train identically."""
    for mode in ("server", "client"):
        run_dpo(config(api_server, data, tmp_path / mode, pairs_file=pairs_file, loss_on=mode,
                       nll_weight=0.7), log=lambda _: None)
    server, client = rows(tmp_path / "server" / "metrics.jsonl"), rows(tmp_path / "client" / "metrics.jsonl")
    for key in ("dpo_loss", "preference_accuracy", "reward_margin", "chosen_reward", "rejected_reward",
                "grad_norm"):
        assert [r[key] for r in server] == pytest.approx([r[key] for r in client], rel=1e-4, abs=1e-5), key
    assert server[0]["dpo_loss"] > math.log(2) + 0.1  # the NLL term adds to ln 2 at step 0


def test_base_reference_differs_from_a_trained_starting_policy(api_server: ApiServer, data: Path,
                                                               pairs_file: Path, tmp_path: Path) -> None:
    """reference=base turns the adapter off: starting from a trained state, step 0's margin is not 0."""
    trainer = api_server.client().create_lora_training_client(base_model=str(api_server.model_dir), rank=4,
                                                              seed=1).result()
    tokenizer = trainer.get_tokenizer()
    chosen = tokenize_pair(tokenizer, PAIRS[0]["prompt"], PAIRS[0]["chosen"])
    datum = sft_datum(chosen.prompt + chosen.completion, len(chosen.prompt))
    for _ in range(3):
        trainer.forward_backward([datum], "cross_entropy").result()
        trainer.optim_step(types.AdamParams(learning_rate=5e-2)).result()
    state = trainer.save_state("sft").result().path
    run_dpo(config(api_server, data, tmp_path / "base", pairs_file=pairs_file, steps=1, init_state=state,
                   reference="base"), log=lambda _: None)
    run_dpo(config(api_server, data, tmp_path / "snap", pairs_file=pairs_file, steps=1, init_state=state),
            log=lambda _: None)
    base, snap = rows(tmp_path / "base" / "metrics.jsonl")[0], rows(tmp_path / "snap" / "metrics.jsonl")[0]
    assert snap["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert base["reward_margin"] > 0.05  # the trained adapter already prefers the chosen answer


def test_sampled_pairs_use_gold_when_no_sample_is_correct_and_resume_exactly(api_server: ApiServer,
                                                                               data: Path,
                                                                               tmp_path: Path) -> None:
    settings = dict(pair_prompts=4, pair_samples=3, gold_fallback=True, steps=3, save_every=1)
    straight = tmp_path / "straight"
    run_dpo(config(api_server, data, straight, **settings), log=lambda _: None)
    pairs = rows(straight / "pairs.jsonl")
    assert len(pairs) == 4  # the random test model never writes correct SQL: gold is every chosen
    tokenizer = api_server.client().create_lora_training_client(
        base_model=str(api_server.model_dir), rank=1).result().get_tokenizer()
    gold = load_split(data, "rl")[0]
    assert pairs[0]["chosen"] == tokenize_pair(tokenizer, "", gold.completion).completion

    interrupted = tmp_path / "interrupted"
    run_dpo(config(api_server, data, interrupted, **settings), log=lambda _: None)
    records = (interrupted / "checkpoints.jsonl").read_text().splitlines()
    (interrupted / "checkpoints.jsonl").write_text(records[0] + "\n")
    run_dpo(config(api_server, data, interrupted, **settings, resume=True), log=lambda _: None)
    expected = rows(straight / "metrics.jsonl")[1:]
    resumed = rows(interrupted / "metrics.jsonl")[-2:]
    assert [r["step"] for r in resumed] == [1, 2]
    assert [r["dpo_loss"] for r in resumed] == [r["dpo_loss"] for r in expected]


def test_no_pairs_and_bad_pairs_files_get_clear_errors(api_server: ApiServer, data: Path,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no preference pairs"):  # nothing correct and no gold fallback
        run_dpo(config(api_server, data, tmp_path / "none", pair_prompts=2, pair_samples=2,
                       gold_fallback=False), log=lambda _: None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*missing \['rejected'\]"):
        run_dpo(config(api_server, data, tmp_path / "bad", pairs_file=bad), log=lambda _: None)
    with pytest.raises(ValueError, match="beta must be positive"):
        DPOConfig(data_dir=data, out_dir=tmp_path, base_url="http://unused", beta=0.0)
