"""Two tenants on one server: neither can see, sample, train, load or delete what the other owns."""

from __future__ import annotations

import httpx
import pytest
import tinker
from tinker import types

from helpers.data import sft_datum
from helpers.server import ApiServer


def raw(api_server: ApiServer, tenant: str) -> httpx.Client:
    return httpx.Client(base_url=api_server.url + "/api/v1", headers={"X-API-Key": api_server.keys[tenant]},
                        timeout=30)


def outcome(client: httpx.Client, future: dict) -> dict:
    """Polls a future to its end, as the SDK does."""
    while True:
        body = client.post("/retrieve_future", json={"request_id": future["request_id"]}).json()
        if body.get("type") != "try_again":
            return body


@pytest.fixture(scope="module")
def alice_run(api_server: ApiServer):
    client = api_server.client("alice")
    trainer = client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=31).result()
    trainer.forward_backward([sft_datum([2, 40, 41, 42, 1], 2)], "cross_entropy").result()
    state = trainer.save_state("private").result().path
    sampler_path = trainer.save_weights_for_sampler("private").result().path
    sampler = trainer.save_weights_and_get_sampling_client().result()
    yield trainer, state, sampler_path, sampler
    client.close("success").result()


def test_unknown_api_key_is_refused(api_server: ApiServer) -> None:
    with pytest.raises(tinker.AuthenticationError):
        stranger = tinker.ServiceClient(base_url=api_server.url, api_key="tml-not-a-known-key")
        stranger.create_lora_training_client(str(api_server.model_dir))
    assert httpx.post(api_server.url + "/api/v1/create_session", json={}).status_code == 401


def test_other_tenant_cannot_see_load_sample_or_delete(api_server: ApiServer, alice_run) -> None:
    trainer, state, sampler_path, _ = alice_run
    bob = api_server.client("bob")
    rest = tinker.RestClient(base_url=api_server.url, api_key=api_server.keys["bob"])
    try:
        with pytest.raises(tinker.NotFoundError):  # see
            rest.get_training_run_by_tinker_path(state).result()
        with pytest.raises(tinker.NotFoundError):
            rest.list_checkpoints(trainer.model_id).result()
        assert rest.list_user_checkpoints().result().checkpoints == []
        with pytest.raises(tinker.RequestFailedError, match="no checkpoint"):  # load
            bob.create_training_client_from_state_with_optimizer(state).result()
        with pytest.raises(tinker.NotFoundError):  # sample from saved weights
            bob.create_sampling_client(model_path=sampler_path).result()
        with pytest.raises(tinker.NotFoundError):  # delete
            rest.delete_checkpoint_from_tinker_path(state).result()
    finally:
        bob.close("success").result()
    alice_rest = tinker.RestClient(base_url=api_server.url, api_key=api_server.keys["alice"])
    checkpoints = alice_rest.list_checkpoints(trainer.model_id).result().checkpoints
    assert state in {c.tinker_path for c in checkpoints}


def test_other_tenant_cannot_train_sample_or_read_futures(api_server: ApiServer, alice_run) -> None:
    trainer, _, _, sampler = alice_run
    alice, bob = raw(api_server, "alice"), raw(api_server, "bob")
    assert bob.post("/get_info", json={"model_id": trainer.model_id}).status_code == 404
    step = bob.post("/optim_step", json={"model_id": trainer.model_id, "seq_id": 100,
                                         "adam_params": {}}).json()
    assert outcome(bob, step) == {"error": f"no model {trainer.model_id!r} is loaded for you; create it or "
                                           "load a checkpoint", "category": "user"}
    sample = bob.post("/asample", json={"sampling_session_id": sampler._sampling_session_id, "num_samples": 1,
                                        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [2, 3]}]},
                                        "sampling_params": {"max_tokens": 1}}).json()
    assert "no sampler" in outcome(bob, sample)["error"]
    mine = alice.post("/get_info", json={"model_id": trainer.model_id})
    assert mine.status_code == 200 and mine.json()["lora_rank"] == 2
    own = alice.post("/asample", json={"sampling_session_id": sampler._sampling_session_id, "num_samples": 1,
                                       "prompt": {"chunks": [{"type": "encoded_text", "tokens": [2, 3]}]},
                                       "sampling_params": {"max_tokens": 1}}).json()
    assert "unknown request_id" in outcome(bob, own)["error"]  # alice's future is invisible to bob
    reply = alice.post("/retrieve_future", json={"request_id": own["request_id"]})  # held until done
    assert reply.headers["content-type"] == "application/x-protobuf"
    forward = trainer.forward([sft_datum([2, 40, 41, 42, 1], 2)], "cross_entropy").result()
    assert forward.metrics["loss:sum"] > 0
    one_token = types.SamplingParams(max_tokens=1)
    sampled = sampler.sample(types.ModelInput.from_ints([2, 3]), 1, one_token).result()
    assert len(sampled.sequences) == 1
