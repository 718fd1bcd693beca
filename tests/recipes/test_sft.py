"""The SFT recipe through a real `kubetune serve` and the official SDK: it learns, and resume
continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kubetune.api.checkpoints import CheckpointRef
from kubetune.recipes import SFTConfig, run_sft
from kubetune.recipes.data import batch_indices
from kubetune.recipes.sft import learning_rate_at
from kubetune.tasks.text2sql import build_dataset

from helpers.server import ApiServer

SIZES = {"train": 40, "rl": 10, "heldout_values": 10, "heldout_paraphrase": 10, "heldout_database": 10}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sft") / "data"
    build_dataset(path, sizes=SIZES)
    return path


def config(api_server: ApiServer, data: Path, out: Path, **overrides) -> SFTConfig:
    settings = dict(data_dir=data, out_dir=out, base_url=api_server.url, base_model=str(api_server.model_dir),
                    api_key=api_server.keys["alice"], steps=6, batch_size=4, learning_rate=2e-2,
                    warmup_steps=1, lora_rank=4, max_length=64, save_every=0, eval_examples=0,
                    train_unembed=True)
    settings.update(overrides)
    return SFTConfig(**settings)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_loss_falls_and_outputs_are_written(api_server: ApiServer, data: Path, tmp_path: Path) -> None:
    result = run_sft(config(api_server, data, tmp_path, learning_rate=0.05, steps=10), log=lambda _: None)
    metrics = rows(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(10))
    assert metrics[-1]["loss"] < 0.8 * metrics[0]["loss"], [m["loss"] for m in metrics]
    assert result["sampler_path"].startswith("tinker://")
    assert "/sampler_weights/final" in result["sampler_path"]
    assert result["state_path"].endswith("/weights/final")
    assert json.loads((tmp_path / "result.json").read_text())["sampler_path"] == result["sampler_path"]
    # A shared server's run fetches its adapter through the external-weights export: the same tensors
    # as the server's own copy of the final sampler weights.
    from safetensors.torch import load_file

    tenant = api_server.service.tenants.resolve(api_server.keys["alice"])
    ref = CheckpointRef.parse(result["sampler_path"])
    served = load_file(api_server.service.store.sampler_dir(tenant, ref) / "adapter_model.safetensors")
    fetched = load_file(Path(result["adapter_dir"]) / "adapter_model.safetensors")
    assert Path(result["adapter_dir"]) == tmp_path / "adapter" and served.keys() == fetched.keys()
    assert all(torch.equal(served[k], fetched[k]) for k in served)


def test_resume_continues_exactly_where_it_stopped(api_server: ApiServer, data: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_sft(config(api_server, data, straight, steps=4, save_every=2), log=lambda _: None)
    # The same run, "interrupted" after its first saved state (step 1), then resumed.
    interrupted = tmp_path / "interrupted"
    run_sft(config(api_server, data, interrupted, steps=4, save_every=2), log=lambda _: None)
    records = (interrupted / "checkpoints.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [1, 3]
    (interrupted / "checkpoints.jsonl").write_text(records[0] + "\n")
    run_sft(config(api_server, data, interrupted, steps=4, save_every=2, resume=True), log=lambda _: None)
    resumed = rows(interrupted / "metrics.jsonl")[-2:]
    expected = rows(straight / "metrics.jsonl")[2:]
    assert [r["step"] for r in resumed] == [2, 3]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]  # bit for bit on CPU
    assert [r["grad_norm"] for r in resumed] == [r["grad_norm"] for r in expected]


def test_batches_and_schedule_are_pure_functions_of_the_step() -> None:
    first_epoch = [i for step in range(5) for i in batch_indices(step, 20, 4, seed=0)]
    assert sorted(first_epoch) == list(range(20))  # an epoch visits every example once
    assert batch_indices(7, 20, 4, seed=0) == batch_indices(7, 20, 4, seed=0)
    assert batch_indices(0, 20, 4, seed=0) != batch_indices(0, 20, 4, seed=1)
    cfg = SFTConfig(data_dir=Path("."), out_dir=Path("."), base_url="http://unused", steps=100,
                    learning_rate=1.0, warmup_steps=10)
    assert learning_rate_at(0, cfg) == pytest.approx(0.1)
    assert learning_rate_at(10, cfg) == pytest.approx(1.0)
    assert learning_rate_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_run_leaves_an_adapter_directory_for_eval(api_server: ApiServer, data: Path, tmp_path: Path) -> None:
    """The final adapter comes back through the SDK as a local PEFT dir that `kubetune eval` loads."""
    from peft import PeftModel

    from kubetune.engine.generation import adapter_base_model
    from kubetune.models.reference import load_base_model

    result = run_sft(config(api_server, data, tmp_path, steps=2, eval_examples=3,
                            eval_splits=("heldout_values", "heldout_database"), max_prompt_tokens=60),
                     log=lambda _: None)
    assert set(result["eval"]) == {"heldout_values", "heldout_database"}
    assert all(r["total"] == 3 and 0.0 <= r["accuracy"] <= r["valid_sql"] + 1e-9
               for r in result["eval"].values())
    adapter = Path(result["adapter_dir"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert adapter == tmp_path / "adapter"
    # What `kubetune eval --adapter` does: find the base model from the adapter and load both.
    assert Path(adapter_base_model(adapter)) == api_server.model_dir.resolve()
    model, _ = load_base_model(adapter_base_model(adapter))
    loaded = PeftModel.from_pretrained(model, str(adapter))
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
