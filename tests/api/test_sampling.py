"""Sampling through the real server with the unmodified `tinker` SDK."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tinker
from tinker import types

from helpers.data import sft_datum
from helpers.server import ApiServer

PROMPT = [2, 30, 31, 32, 33]


@pytest.fixture(scope="module")
def service_client(api_server: ApiServer):
    client = api_server.client("alice")
    yield client
    client.close("success").result()


@pytest.fixture(scope="module")
def trained(api_server: ApiServer, service_client):
    """A job one SFT step away from the base model."""
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=4, seed=7).result()
    trainer.forward_backward([sft_datum([2, 30, 31, 32, 33, 34, 35, 1], 3)], "cross_entropy")
    trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    return trainer


def test_sample_returns_num_samples_with_logprobs_that_decode(api_server: ApiServer, trained) -> None:
    sampler = trained.save_weights_and_get_sampling_client().result()
    result = sampler.sample(types.ModelInput.from_ints(PROMPT), 3,
                            types.SamplingParams(max_tokens=6, temperature=1.0, seed=11, stop=[])).result()
    assert len(result.sequences) == 3
    assert len({s.sequence_id for s in result.sequences}) == 3  # one id per sample, from the submission
    tokenizer = sampler.get_tokenizer()
    for sequence in result.sequences:
        assert len(sequence.tokens) == 6 and sequence.stop_reason == "length"
        assert isinstance(tokenizer.decode(sequence.tokens), str)
        # Sampled-token logprobs are the model's own: forward on the same tokens gives them back.
        check = trained.forward([sft_datum(PROMPT + sequence.tokens, len(PROMPT))], "cross_entropy").result()
        np.testing.assert_allclose(check.loss_fn_outputs[0]["logprobs"].to_numpy()[len(PROMPT) - 1:],
                                   sequence.logprobs, atol=1e-5)
    again = sampler.sample(types.ModelInput.from_ints(PROMPT), 3,
                           types.SamplingParams(max_tokens=6, temperature=1.0, seed=11, stop=[])).result()
    assert [s.tokens for s in again.sequences] == [s.tokens for s in result.sequences]  # seeded: reproducible


def test_stop_tokens_end_a_sequence(api_server: ApiServer, service_client) -> None:
    sampler = service_client.create_sampling_client(base_model=str(api_server.model_dir)).result()

    def greedy(stop: list[int]) -> types.SampledSequence:
        params = types.SamplingParams(max_tokens=8, temperature=0.0, stop=stop)
        return sampler.sample(types.ModelInput.from_ints(PROMPT), 1, params).result().sequences[0]

    unstopped = greedy([])
    stop_at = unstopped.tokens[2]
    stopped = greedy([stop_at])
    assert stopped.stop_reason == "stop"
    assert stopped.tokens == unstopped.tokens[: unstopped.tokens.index(stop_at) + 1]


def test_compute_logprobs_matches_the_engine(api_server: ApiServer, trained) -> None:
    sampler = trained.save_weights_and_get_sampling_client().result()
    over_http = sampler.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result()
    direct = api_server.service.engine.compute_logprobs(PROMPT, model_id=trained.model_id)
    assert over_http[0] is None and direct[0] is None
    np.testing.assert_allclose(over_http[1:], direct[1:], atol=1e-5)
    last_two = sampler.compute_logprobs(types.ModelInput.from_ints(PROMPT), prompt_logprobs_last_n=2).result()
    assert last_two[:3] == [None, None, None] and last_two[3:] == pytest.approx(over_http[3:], abs=1e-6)


def test_a_snapshot_keeps_its_weights_while_training_continues(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=4, seed=8).result()
    trainer.forward_backward([sft_datum([2, 30, 31, 32, 33, 34, 1], 3)], "cross_entropy")
    trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    snapshot = trainer.save_weights_and_get_sampling_client().result()
    before = snapshot.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result()
    trainer.forward_backward([sft_datum([2, 30, 31, 32, 33, 34, 1], 3)], "cross_entropy")
    trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    # now from the saved snapshot
    after = snapshot.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result()
    np.testing.assert_allclose(after[1:], before[1:], atol=1e-6)
    live = trainer.save_weights_and_get_sampling_client(kind="inflight").result()
    moved = live.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result()
    assert not np.allclose(moved[1:], before[1:], atol=1e-4)


def test_named_sampler_weights_and_create_sampling_client(api_server: ApiServer, service_client,
                                                           trained) -> None:
    path = trained.save_weights_for_sampler("sampler-a").result().path
    assert path == f"tinker://{trained.model_id}/sampler_weights/sampler-a"
    from_path = service_client.create_sampling_client(model_path=path).result()
    assert from_path.get_base_model() == str(api_server.model_dir)
    expected = api_server.service.engine.compute_logprobs(PROMPT, model_id=trained.model_id)
    got = from_path.compute_logprobs(types.ModelInput.from_ints(PROMPT)).result()
    np.testing.assert_allclose(got[1:], expected[1:], atol=1e-5)
    # A training checkpoint samples too: save_state also writes its weights as a sampler adapter.
    state = trained.save_state("state-for-sampling").result().path
    got = service_client.create_sampling_client(model_path=state).result().compute_logprobs(
        types.ModelInput.from_ints(PROMPT)).result()
    np.testing.assert_allclose(got[1:], expected[1:], atol=1e-5)


def test_unsupported_sampling_options_fail_clearly(api_server: ApiServer, service_client) -> None:
    sampler = service_client.create_sampling_client(base_model=str(api_server.model_dir)).result()
    with pytest.raises(tinker.RequestFailedError, match="topk_sample_logprobs is not supported"):
        sampler.sample(types.ModelInput.from_ints(PROMPT), 1, types.SamplingParams(max_tokens=2),
                       topk_sample_logprobs=3).result()
    with pytest.raises(tinker.RequestFailedError, match="outside the model's vocabulary"):
        sampler.sample(types.ModelInput.from_ints([2, 10**6]), 1, types.SamplingParams(max_tokens=2)).result()
    ok = sampler.sample(types.ModelInput.from_ints(PROMPT), 1, types.SamplingParams(max_tokens=2)).result()
    assert len(ok.sequences[0].tokens) <= 2 and not math.isnan(ok.sequences[0].logprobs[0])
