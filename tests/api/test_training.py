"""Training through the real server with the unmodified `tinker` SDK: SFT, forward, RL losses, custom loss."""

from __future__ import annotations

import numpy as np
import pytest
import tinker
import torch
from tinker import types

from kubetune.recipes.data import with_sample_provenance

from helpers.data import rl_datum, sft_datum
from helpers.server import ApiServer


@pytest.fixture(scope="module")
def service_client(api_server: ApiServer):
    client = api_server.client("alice")
    yield client
    client.close("success").result()


def test_sft_steps_lower_the_loss_and_the_tokenizer_resolves(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=4, seed=0).result()
    tokenizer = trainer.get_tokenizer()  # AutoTokenizer on the advertised local path: no Hub
    tokens = tokenizer.encode("select name from users where age > 30;")
    assert tokenizer.decode(tokens, skip_special_tokens=True) == "select name from users where age > 30;"
    data = [sft_datum(tokens, 4), sft_datum(tokenizer.encode("count the rows in the orders table."), 3)]
    losses = []
    for _ in range(4):
        fwd = trainer.forward_backward(data, "cross_entropy")
        step = trainer.optim_step(types.AdamParams(learning_rate=5e-2))
        losses.append(fwd.result().metrics["loss:sum"])
        assert step.result().metrics["optim/step"] >= 1
    assert losses[-1] < losses[0] - 0.5, losses
    info = trainer.get_info()
    assert info.lora_rank == 4 and info.model_data.model_name == str(api_server.model_dir)


def test_forward_matches_the_engine_in_process(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=1).result()
    data = [sft_datum([2, 40, 41, 42, 43, 44, 1], 3)]
    over_http = trainer.forward(data, "cross_entropy").result()
    direct = api_server.service.engine.forward(trainer.model_id, data, "cross_entropy")
    np.testing.assert_array_equal(over_http.loss_fn_outputs[0]["logprobs"].to_numpy(),
                                  direct.loss_fn_outputs[0]["logprobs"].to_numpy())
    assert over_http.metrics["loss:sum"] == pytest.approx(direct.metrics["loss:sum"], abs=1e-5)
    # forward takes no gradient: the next optim_step has nothing to apply.
    with pytest.raises(tinker.RequestFailedError, match="no gradients"):
        trainer.optim_step(types.AdamParams()).result()


def test_rl_losses_including_ppo_with_an_empty_config(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=2,
                                                         train_unembed=False).result()
    tokens = [2, 50, 51, 52, 53, 54]
    forward = trainer.forward([sft_datum(tokens, 1)], "cross_entropy").result()
    on_policy = forward.loss_fn_outputs[0]["logprobs"].to_numpy().tolist()
    for loss in ("importance_sampling", "ppo", "cispo", "dro"):
        out = trainer.forward_backward([rl_datum(tokens, on_policy, 1.0)], loss).result()
        # On-policy, r = 1: importance sampling and PPO give -sum(A) = -(number of tokens).
        if loss in ("importance_sampling", "ppo"):
            assert out.metrics["loss:sum"] == pytest.approx(-len(tokens) + 1, abs=1e-4)
    out = trainer.forward_backward([rl_datum(tokens, [v - 1.0 for v in on_policy], 1.0)], "ppo",
                                   {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}).result()
    # r = e, clipped at 1.1
    assert out.metrics["loss:sum"] == pytest.approx(-1.1 * (len(tokens) - 1), abs=1e-4)
    assert trainer.optim_step(types.AdamParams(learning_rate=1e-3)).result().metrics["optim/step"] == 1.0


def test_forward_backward_custom_dpo_loss(api_server: ApiServer, service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=3).result()
    chosen, rejected = sft_datum([2, 60, 61, 62, 1], 2), sft_datum([2, 60, 70, 71, 1], 2)
    # Reference log-probabilities: the new adapter's LoRA B is zero, so these are the base model's.
    reference = [torch.tensor(o["logprobs"].to_numpy())
                 for o in trainer.forward([chosen, rejected], "cross_entropy").result().loss_fn_outputs]

    def dpo_loss(data: list[types.Datum],
                 logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        w = [torch.tensor(d.loss_fn_inputs["weights"].to_numpy()) for d in data]
        margin = ((logprobs[0] - reference[0]) * w[0]).sum() - ((logprobs[1] - reference[1]) * w[1]).sum()
        return -torch.nn.functional.logsigmoid(0.5 * margin), {"dpo/margin": float(margin.detach())}

    out = trainer.forward_backward_custom([chosen, rejected], dpo_loss).result()
    assert out.metrics["loss:sum"] == pytest.approx(float(np.log(2)), abs=1e-6)
    assert out.metrics["dpo/margin"] == 0.0 and "surrogate_loss:sum" in out.metrics
    trainer.optim_step(types.AdamParams(learning_rate=1e-3)).result()  # alpha / rank = 16: small steps
    after = trainer.forward_backward_custom([chosen, rejected], dpo_loss).result()
    assert after.metrics["dpo/margin"] > 0 and after.metrics["loss:sum"] < out.metrics["loss:sum"]


def test_stable_reinforce_reads_the_servers_own_sampling_record(api_server: ApiServer,
                                                                service_client) -> None:
    trainer = service_client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=4,
                                                         train_unembed=False).result()
    recording = trainer.save_weights_and_get_sampling_client(record_stability_info=True).result()
    prompt = [2, 80, 81, 82]
    params = types.SamplingParams(max_tokens=6, temperature=1.0, seed=11)
    seq = recording.sample(types.ModelInput.from_ints(prompt), 1, params).result().sequences[0]
    tokens, n_sampled = prompt + list(seq.tokens), len(seq.tokens)
    advantage = 0.5
    # The client's logprobs are garbage on purpose: the loss must use the server's record instead.
    good = with_sample_provenance(rl_datum(tokens, [-50.0] * len(tokens), advantage), seq.sequence_id,
                                  len(prompt), n_sampled)

    # On policy (same weights as the sampler): ratio 1 and no KL term, so loss = -A * sum(logp of sampled).
    out = trainer.forward([good], "stable_reinforce", {"kl_coeff": 1.0}).result()
    lp = out.loss_fn_outputs[0]["logprobs"].to_numpy()[len(prompt) - 1:]
    np.testing.assert_allclose(lp, seq.logprobs, atol=1e-4)  # trainer and sampler agree on the same weights
    assert out.metrics["loss:sum"] == pytest.approx(-advantage * float(lp.sum()), abs=1e-3)

    # Off policy: after a large step the truncated ratio min(exp(logp - q), cap) weights each token.
    trainer.forward_backward([sft_datum(tokens, len(prompt))], "cross_entropy").result()
    trainer.optim_step(types.AdamParams(learning_rate=0.2)).result()
    out = trainer.forward([good], "stable_reinforce", {"ratio_cap": 1.2}).result()
    lp = out.loss_fn_outputs[0]["logprobs"].to_numpy()[len(prompt) - 1:].astype(np.float64)
    weight = np.minimum(np.exp(lp - np.asarray(seq.logprobs, dtype=np.float64)), 1.2)
    assert (weight == 1.2).any(), "the step must move some token past the cap"
    assert out.metrics["loss:sum"] == pytest.approx(-advantage * float((weight * lp).sum()), rel=1e-4)

    # Every bad claim is a user error naming the problem; the run keeps working afterwards.
    wrong_targets = np.asarray(tokens[1:-1] + [(tokens[-1] + 1) % 300], dtype=np.int64)
    forged = types.Datum(model_input=good.model_input,
                         loss_fn_inputs={**good.loss_fn_inputs, "target_tokens": wrong_targets},
                         model_input_spans=good.model_input_spans,
                         loss_fn_input_spans=good.loss_fn_input_spans)
    unrecorded = trainer.save_weights_and_get_sampling_client().result().sample(
        types.ModelInput.from_ints(prompt), 1, params).result().sequences[0]
    other_session = api_server.client("alice")
    foreign = other_session.create_sampling_client(base_model=str(api_server.model_dir),
                                                   record_stability_info=True).result()
    foreign_seq = foreign.sample(types.ModelInput.from_ints(prompt), 1, params).result().sequences[0]

    def claiming(sequence: types.SampledSequence) -> types.Datum:
        """A datum whose spans claim ``sequence``'s tokens, which this session has no record of."""
        return with_sample_provenance(rl_datum(prompt + list(sequence.tokens), [0.0] * 9, 1.0),
                                      sequence.sequence_id, len(prompt), len(sequence.tokens))

    cases = [
        (rl_datum(tokens, [0.0] * len(tokens), 1.0), "no provenance"),
        (forged, "are not the tokens of sequence"),
        (claiming(unrecorded), "has no record"),
        (claiming(foreign_seq), "has no record"),
    ]
    for datum, message in cases:
        with pytest.raises(tinker.RequestFailedError, match=message):
            trainer.forward_backward([datum], "stable_reinforce").result()
    other_session.close("success").result()
    assert trainer.forward_backward([good], "stable_reinforce").result().metrics["loss:sum"] != 0.0
    assert trainer.optim_step(types.AdamParams(learning_rate=1e-3)).result().metrics["optim/step"] == 2.0
