"""Each built-in loss: value and LoRA gradients equal a direct PyTorch computation on the same weights."""

from __future__ import annotations

import peft
import pytest
import torch
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from tinker import types

from kubetune.engine import LoraSpec

from helpers.models import VOCAB, make_tiny_gemma

LENGTHS = (7, 12, 5)


def _reference_objective(name: str, lp: torch.Tensor, inp: dict[str, torch.Tensor],
                         cfg: dict) -> torch.Tensor:
    """The losses written out independently of kubetune.engine.losses (piecewise where it can be)."""
    if name == "cross_entropy":
        return -(inp["weights"] * lp).sum()
    q, adv = inp.get("sampler_logprobs", inp.get("logprobs")), inp["advantages"]
    ratio = torch.exp(lp - q)
    lo, hi = cfg.get("clip_low_threshold", 0.8), cfg.get("clip_high_threshold", 1.2)
    if name == "importance_sampling":
        return -(ratio * adv).sum()
    if name == "ppo":
        # Pessimistic bound, case by case: positive advantages cap the ratio above, negative ones below.
        objective = torch.where(adv >= 0, torch.where(ratio > hi, hi * adv, ratio * adv),
                                torch.where(ratio < lo, lo * adv, ratio * adv))
        return -objective.sum()
    if name == "cispo":
        coeff = torch.where(ratio < lo, torch.full_like(ratio, lo),
                            torch.where(ratio > hi, torch.full_like(ratio, hi), ratio))
        return -(coeff.detach() * lp * adv).sum()
    if name == "dro":
        beta = cfg.get("beta", 0.05)
        return -(lp * adv).sum() + 0.5 * beta * ((lp - q) ** 2).sum()
    if name == "stable_reinforce":
        # Truncated importance weight as a constant; only sampled positions count.
        cap, kl = cfg.get("ratio_cap", 2.0), cfg.get("kl_coeff", 0.0)
        weight = torch.where(ratio > cap, torch.full_like(ratio, cap), ratio).detach()
        sampled = inp["sampled_mask"] > 0
        return -(weight * lp * adv)[sampled].sum() + 0.5 * kl * ((lp - q) ** 2)[sampled].sum()
    raise AssertionError(name)


def _data(loss: str, current_lp: list[torch.Tensor] | None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    data, raw = [], []
    for i, n in enumerate(LENGTHS):
        tokens = torch.randint(3, VOCAB, (n + 1,), generator=gen)
        inputs = {"target_tokens": tokens[1:]}
        if loss == "cross_entropy":
            inputs["weights"] = torch.randn(n, generator=gen)  # signed, as DPO sends them
        else:
            # Sampler logprobs near the model's own so ratios land on both sides of the clip range.
            base = current_lp[i] if current_lp is not None else torch.zeros(n)
            key = "sampler_logprobs" if loss == "stable_reinforce" else "logprobs"
            inputs[key] = base + 0.6 * torch.randn(n, generator=gen)
            inputs["advantages"] = torch.randn(n, generator=gen)
            if loss == "stable_reinforce":
                # a prompt run, then sampled tokens
                inputs["sampled_mask"] = (torch.arange(n) >= n // 3).float()
        raw.append((tokens[:-1], inputs))
        data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1].tolist()),
                                loss_fn_inputs=inputs))
    return data, raw


@pytest.mark.parametrize(
    ("loss", "config"),
    [
        ("cross_entropy", {}),
        ("importance_sampling", {}),
        ("ppo", {}),
        ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}),
        ("cispo", {"clip_low_threshold": 0.7, "clip_high_threshold": 1.3}),
        ("dro", {"beta": 0.3}),
        ("stable_reinforce", {}),
        ("stable_reinforce", {"ratio_cap": 1.5, "kl_coeff": 0.2}),
    ],
)
def test_loss_and_gradients_match_direct_pytorch(engine, loss: str, config: dict) -> None:
    job = engine.create_model("m", LoraSpec(rank=4, seed=3))
    ref = _same_adapter_outside_engine(engine, job)

    # Sampling logprobs are built around the current model's logprobs so clipping is exercised.
    _, raw = _data("cross_entropy", None)
    with torch.no_grad():
        current = [torch.log_softmax(ref(input_ids=t[None]).logits[0].float(), -1)
                   .gather(-1, i["target_tokens"][:, None])[:, 0]
                   for t, i in raw]
    data, raw = _data(loss, current)

    result = engine.forward_backward("m", data, loss, config)

    total = torch.zeros(())
    capped: list[bool] = []
    for index, (tokens, inputs) in enumerate(raw):
        logits = ref(input_ids=tokens[None]).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, inputs["target_tokens"][:, None])[:, 0]
        torch.testing.assert_close(result.loss_fn_outputs[index]["logprobs"].to_torch(), lp.detach(),
                                   rtol=1e-5, atol=1e-5)
        if loss != "cross_entropy":
            ratio = torch.exp(lp.detach() - inputs.get("sampler_logprobs", inputs.get("logprobs")))
            if loss in ("ppo", "cispo"):
                lo, hi = config.get("clip_low_threshold", 0.8), config.get("clip_high_threshold", 1.2)
                assert ((ratio < lo) | (ratio > hi)).any(), "test data must exercise clipping"
            if loss == "stable_reinforce":
                capped.append(bool((ratio[inputs["sampled_mask"] > 0] > config.get("ratio_cap", 2.0)).any()))
        total = total + _reference_objective(loss, lp, inputs, config)
    total.backward()

    assert result.metrics["loss:sum"] == pytest.approx(float(total.detach()), rel=1e-5, abs=1e-5)
    _assert_same_gradients(engine, job, ref)
    if loss == "stable_reinforce":
        assert any(capped), "test data must exercise the ratio cap"


def _same_adapter_outside_engine(engine, job):
    """Reference model: the same base weights, a single standard PEFT adapter with the same tensors."""
    with torch.no_grad():  # move the adapter away from its zero-initialised B so every path carries gradient
        for p in job.params:
            p.add_(0.05 * torch.randn_like(p))
    adapter_cfg = engine.peft.peft_config[job.metadata["adapter"]]
    ref = peft.get_peft_model(make_tiny_gemma(), peft.LoraConfig(
        r=4, lora_alpha=adapter_cfg.lora_alpha, target_modules=list(adapter_cfg.target_modules),
        lora_dropout=0.0))
    set_peft_model_state_dict(ref, get_peft_model_state_dict(engine.peft,
                                                             adapter_name=job.metadata["adapter"],
                                                             save_embedding_layers=False))
    ref.eval()
    return ref


def _assert_same_gradients(engine, job, ref) -> None:
    ref_grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    adapter = job.metadata["adapter"]
    engine_grads = {n.replace(f".{adapter}.", ".default."): p.grad for n, p in engine.peft.named_parameters()
                    if f".{adapter}." in n}
    assert set(engine_grads) == set(ref_grads) and len(ref_grads) > 0
    for name, grad in ref_grads.items():
        torch.testing.assert_close(engine_grads[name], grad, rtol=1e-3,
                                   atol=1e-5 * float(grad.abs().max()) + 1e-7)


def test_pairwise_dpo_loss_and_gradients_match_direct_pytorch(engine) -> None:
    """kubetune's server-side ``dpo``: -scale * Σ log σ(β·[(s_c - s_ref_c) - (s_r - s_ref_r)]) over pairs."""
    job = engine.create_model("m", LoraSpec(rank=4, seed=3))
    ref = _same_adapter_outside_engine(engine, job)
    gen = torch.Generator().manual_seed(5)
    data, raw = [], []
    for n in (6, 9, 4, 7):  # two (chosen, rejected) pairs
        tokens = torch.randint(3, VOCAB, (n + 1,), generator=gen)
        weights = (torch.arange(n) >= n // 2).float()  # completion tokens only
        inputs = {"target_tokens": tokens[1:], "weights": weights,
                  "ref_logprobs": -3 + torch.randn(n, generator=gen)}
        raw.append((tokens[:-1], inputs))
        data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1].tolist()),
                                loss_fn_inputs=inputs))
    config = {"beta": 0.5, "scale": 0.5, "nll_weight": 0.7}

    result = engine.forward_backward("m", data, "dpo", config)

    summed, nll = [], []
    for tokens, inputs in raw:
        lp = torch.log_softmax(ref(input_ids=tokens[None]).logits[0].float(), -1).gather(
            -1, inputs["target_tokens"][:, None])[:, 0]
        summed.append(((lp - inputs["ref_logprobs"]) * inputs["weights"]).sum())
        nll.append(-(lp * inputs["weights"]).sum() / inputs["weights"].sum())
    margins = [0.5 * (summed[0] - summed[1]), 0.5 * (summed[2] - summed[3])]
    pair_terms = [torch.log1p(torch.exp(-margins[0])) + 0.7 * nll[0],
                  torch.log1p(torch.exp(-margins[1])) + 0.7 * nll[2]]
    total = 0.5 * sum(pair_terms)
    total.backward()
    assert result.metrics["loss:sum"] == pytest.approx(float(total), rel=1e-5)
    assert result.metrics["dpo/correct:sum"] == sum(float(m > 0) for m in margins)
    assert result.metrics["dpo/margin:sum"] == pytest.approx(float(sum(margins)), rel=1e-5)
    pair_losses = [0.5 * float(t) for t in pair_terms]
    elementwise = [float(o["elementwise_loss"].to_torch().sum()) for o in result.loss_fn_outputs]
    assert elementwise[0] + elementwise[1] == pytest.approx(pair_losses[0], rel=1e-5)
    _assert_same_gradients(engine, job, ref)


def test_dpo_rejects_an_incomplete_pair_before_any_compute(engine) -> None:
    from kubetune.errors import UserError

    engine.create_model("m", LoraSpec(rank=4, seed=3))
    datum = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7]),
                        loss_fn_inputs={"target_tokens": torch.tensor([6, 7, 8]),
                                        "weights": torch.tensor([0.0, 1.0, 1.0]),
                                        "ref_logprobs": torch.tensor([0.0, -1.0, -1.0])})
    with pytest.raises(UserError, match=r"\(chosen, rejected\) pairs.*3 datums"):
        engine.forward_backward("m", [datum] * 3, "dpo", {"beta": 0.1})


def test_gradients_accumulate_until_optim_step(engine) -> None:
    """Two forward_backward calls on halves equal one call on the whole batch (Tinker's semantics)."""
    from kubetune.engine import Engine

    data, _ = _data("cross_entropy", None, seed=5)
    job = engine.create_model("m", LoraSpec(rank=4, seed=1))
    engine.forward_backward("m", data[:1])
    engine.forward_backward("m", data[1:])
    split = [p.grad.clone() for p in job.params]

    other = Engine(make_tiny_gemma(), None, base_model="tiny-test")
    job2 = other.create_model("m", LoraSpec(rank=4, seed=1))
    other.forward_backward("m", data)
    for a, b in zip(split, [p.grad for p in job2.params], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    engine.optim_step("m", types.AdamParams(learning_rate=1e-3))
    assert all(p.grad is None for p in job.params)


def test_forward_only_leaves_no_gradient(engine) -> None:
    data, _ = _data("cross_entropy", None)
    job = engine.create_model("m", LoraSpec(rank=4, seed=1))
    out = engine.forward("m", data)
    assert out.metrics["loss:sum"] != 0
    assert all(p.grad is None for p in job.params)
