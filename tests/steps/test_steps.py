"""Pipeline steps: model artifacts by reference, and clear errors for wrong inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.steps.artifacts import MODEL_INFO, read_model_info
from kubetune.steps.data import prepare_data
from kubetune.steps.model import prepare_model
from kubetune.steps.train import train


def test_a_real_model_is_recorded_by_reference_not_downloaded(tmp_path: Path) -> None:
    info = prepare_model(tmp_path / "m", reference="google/gemma-3-1b-it")
    assert info == {"kind": "base", "base_model": "google/gemma-3-1b-it"}
    assert json.loads((tmp_path / "m" / MODEL_INFO).read_text()) == info
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MODEL_INFO]


def test_wrong_inputs_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a kubetune model artifact"):
        read_model_info(tmp_path)
    with pytest.raises(ValueError, match="unknown recipe 'grpo'; choose one of sft, ppo, dpo"):
        train("grpo", tmp_path, tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="neither 'embedded' nor a Spider-format directory"):
        prepare_data(tmp_path / "data", source=str(tmp_path / "missing"))


TINY_SIZES = {"train": 16, "rl": 8, "heldout_values": 4, "heldout_paraphrase": 4, "heldout_database": 4}


def test_an_identical_training_run_is_copied_not_retrained(tmp_path: Path) -> None:
    from kubetune.steps.train import directory_digest, train_reusing

    prepare_data(tmp_path / "data", sizes=TINY_SIZES)
    prepare_model(tmp_path / "base", pretrain_steps=2)
    params = {"steps": 2, "batch_size": 2, "lora_rank": 4, "eval_examples": 0}
    reuse = tmp_path / "reuse"
    args = ("sft", tmp_path / "data", tmp_path / "base")
    first = train_reusing(reuse, *args, tmp_path / "a", params=params)
    second = train_reusing(reuse, *args, tmp_path / "b", params=params)
    assert "reused_from" not in first and Path(second["reused_from"]).parent == reuse
    # every byte, adapter included
    assert directory_digest(tmp_path / "b") == directory_digest(tmp_path / "a")
    assert second["state_path"] == first["state_path"]
    # Any difference in settings, data or starting model is a different run.
    other = train_reusing(reuse, *args, tmp_path / "c", params={**params, "lora_rank": 8})
    assert "reused_from" not in other and other["lora_rank"] == 8
    (tmp_path / "data" / "extra.txt").write_text("changed")
    changed = train_reusing(reuse, *args, tmp_path / "d", params=params)
    assert "reused_from" not in changed
    assert len([p for p in reuse.iterdir() if p.is_dir()]) == 3 and not list(reuse.glob(".*partial"))


def test_a_second_round_is_ranked_with_the_first(tmp_path: Path) -> None:
    from kubetune.steps.track import select_best

    dirs = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        dirs.append(str(tmp_path / name))
    first = select_best(["a", "b"], [0.2, 0.3], dirs[:2], metric="acc",
                        experiments=[{"run_name": "a", "lora_rank": 8}, {"run_name": "b", "lora_rank": 16}])
    assert (first["name"], first["model_dir"], first["round"]) == ("b", dirs[1], 1)
    # The earlier winner stays the winner when the new round is worse; its model comes from
    # previous_best_dir.
    worse = select_best(["c"], [0.25], dirs[2:], metric="acc", previous=first,
                        previous_best_dir=tmp_path / "kept")
    assert (worse["name"], worse["model_dir"], worse["round"]) == ("b", str(tmp_path / "kept"), 2)
    assert [r["run_name"] for r in worse["results"]] == ["a", "b", "c"]
    assert [r["round"] for r in worse["results"]] == [1, 1, 2]
    assert worse["table"].splitlines()[2:] == ["| 1 | b (best) | 1 | 0.300 |", "| 2 | c | 2 | 0.250 |",
                                               "| 3 | a | 1 | 0.200 |"]
    better = select_best(["c"], [0.5], dirs[2:], metric="acc", previous=first,
                         previous_best_dir=tmp_path / "kept")
    assert (better["name"], better["model_dir"], better["score"]) == ("c", dirs[2], 0.5)


def test_the_tiny_base_model_is_pretrained_on_the_task_corpus(tmp_path: Path) -> None:
    """prepare_base_model's tiny model is the bootstrap of the text-to-SQL pretraining corpus of its seed."""
    from kubetune.models.bootstrap import bootstrap_tiny_model
    from kubetune.tasks.text2sql import pretraining_corpus

    info = prepare_model(tmp_path / "step", "tiny", seed=1, pretrain_steps=1)
    direct = bootstrap_tiny_model(tmp_path / "direct", pretraining_corpus(1), seed=1, steps=1)
    step_hash = json.loads((tmp_path / "step" / "kubetune_bootstrap.json").read_text())["content_hash"]
    assert info["pretrain_steps"] == 1 and step_hash == direct.content_hash
