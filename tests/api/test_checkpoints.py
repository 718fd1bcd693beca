"""Checkpoints through the real server: save/load round trips, resume from state, the RestClient calls."""

from __future__ import annotations

import warnings

import pytest
import tinker
import torch
from tinker import types

from kubetune.api.checkpoints import CheckpointRef

from helpers.data import sft_datum
from helpers.server import ApiServer

DATA = [sft_datum([2, 80, 81, 82, 83, 84, 1], 3), sft_datum([2, 90, 91, 92, 1], 2)]
ADAM = types.AdamParams(learning_rate=1e-2)


@pytest.fixture(scope="module")
def service_client(api_server: ApiServer):
    client = api_server.client("alice")
    yield client
    client.close("success").result()


def adapter(api_server: ApiServer, model_id: str) -> dict[str, torch.Tensor]:
    engine = api_server.service.engine
    with engine._lock:  # the worker may be changing the model's modules right now
        return engine._adapter_tensors(engine._jobs[model_id])


def step(trainer) -> float:
    loss = trainer.forward_backward(DATA, "cross_entropy")
    trainer.optim_step(ADAM).result()
    return loss.result().metrics["loss:sum"]


def test_save_state_then_load_state_restores_identical_weights(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=4, seed=21).result()
    step(trainer)
    path = trainer.save_state("round-trip").result().path
    assert path == f"tinker://{trainer.model_id}/weights/round-trip"
    saved = adapter(api_server, trainer.model_id)
    step(trainer)
    trained = adapter(api_server, trainer.model_id)
    assert not torch.equal(next(iter(saved.values())), next(iter(trained.values())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # load_state is deprecated in the SDK, still supported
        trainer.load_state(path).result()
    for name, tensor in adapter(api_server, trainer.model_id).items():
        assert torch.equal(tensor, saved[name]), name
    with pytest.raises(tinker.RequestFailedError, match="already exists"):
        trainer.save_state("round-trip").result()


def test_resume_from_state_with_optimizer_is_bit_identical(api_server: ApiServer, service_client) -> None:
    straight = service_client.create_lora_training_client(str(api_server.model_dir), rank=4, seed=22).result()
    step(straight)
    path = straight.save_state("final").result().path  # "final" repeats across runs: names are per model
    expected = [step(straight) for _ in range(2)]

    resumed = service_client.create_training_client_from_state_with_optimizer(path).result()
    assert resumed.model_id.startswith(f"{service_client.holder.get_session_id()}:train:")
    assert resumed.get_info().lora_rank == 4
    assert [step(resumed) for _ in range(2)] == expected
    for name, tensor in adapter(api_server, resumed.model_id).items():
        assert torch.equal(tensor, adapter(api_server, straight.model_id)[name]), name

    weights_only = service_client.create_training_client_from_state(path).result()
    assert weights_only.forward(DATA, "cross_entropy").result().metrics["loss:sum"] == pytest.approx(
        expected[0], abs=1e-5)  # same weights as the checkpoint; fresh AdamW state


def test_rest_client_lists_describes_and_deletes_checkpoints(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=23).result()
    step(trainer)
    state = trainer.save_state("000001", user_metadata={"step": "1"}).result().path
    sampler = trainer.save_weights_for_sampler("000001").result().path
    rest = tinker.RestClient(base_url=api_server.url, api_key=api_server.keys["alice"])

    run = rest.get_training_run_by_tinker_path(state).result()
    assert run.training_run_id == trainer.model_id and run.base_model == str(api_server.model_dir)
    assert run.lora_rank == 2 and run.model_owner == "alice"
    assert run.last_checkpoint.tinker_path == state and run.last_sampler_checkpoint.tinker_path == sampler

    listed = rest.list_checkpoints(trainer.model_id).result().checkpoints
    assert {(c.checkpoint_type, c.tinker_path) for c in listed} == {("training", state), ("sampler", sampler)}
    assert next(c for c in listed if c.tinker_path == state).user_metadata == {"step": "1"}
    assert all(c.size_bytes > 0 for c in listed)
    assert state in {c.tinker_path for c in rest.list_user_checkpoints().result().checkpoints}
    info = rest.get_weights_info_by_tinker_path(state).result()
    assert (info.lora_rank, info.train_mlp) == (2, True)

    rest.delete_checkpoint_from_tinker_path(state).result()
    assert [c.tinker_path for c in rest.list_checkpoints(trainer.model_id).result().checkpoints] == [sampler]
    with pytest.raises(tinker.RequestFailedError, match="no checkpoint"):
        service_client.create_training_client_from_state(state).result()


def test_checkpoint_files_are_a_plain_peft_adapter(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=24).result()
    trainer.save_weights_for_sampler("peft").result()
    ref = CheckpointRef(trainer.model_id, "sampler_weights", "peft")
    directory = api_server.service.store.sampler_dir("alice", ref)
    assert sorted(p.name for p in directory.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert api_server.service.store.root / "alice" in directory.parents  # the tenant's own subtree
