"""Many jobs on one base model: isolation, bit-for-bit reproducibility, checkpoints, clean errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from tinker import types

from kubetune.engine import Engine, LoraSpec, UnknownModelError, UserError

from helpers.models import VOCAB, make_tiny_gemma

ADAM = types.AdamParams(learning_rate=5e-3, weight_decay=0.01, grad_clip_norm=1.0)


def _batch(seed: int, n: int = 3, length: int = 10) -> list[types.Datum]:
    gen = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(n):
        tokens = torch.randint(3, VOCAB, (length + 1,), generator=gen).tolist()
        data.append(types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * length},
        ))
    return data


def _weights(job) -> list[torch.Tensor]:
    return [p.detach().clone() for p in job.params]


def _train(engine: Engine, model_id: str, steps: range) -> list[float]:
    losses = []
    for step in steps:
        losses.append(engine.forward_backward(model_id, _batch(step)).metrics["loss:sum"])
        engine.optim_step(model_id, ADAM)
    return losses


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_one_base_model_many_adapters(engine) -> None:
    def base_tensors() -> set[int]:
        return {id(p) for n, p in engine.peft.named_parameters() if "lora_" not in n}

    before = base_tensors()
    a = engine.create_model("a", LoraSpec(rank=4, seed=1))
    b = engine.create_model("b", LoraSpec(rank=8, seed=2, train_unembed=False))
    # The base is shared: the very same tensors, no second copy; only LoRA tensors were added.
    assert base_tensors() == before
    assert a.trainable_parameters() != b.trainable_parameters()
    assert not set(map(id, a.params)) & set(map(id, b.params))


def test_jobs_train_independently_bit_for_bit(engine) -> None:
    a = engine.create_model("a", LoraSpec(rank=4, seed=1))
    b = engine.create_model("b", LoraSpec(rank=8, seed=2))
    b_before = _weights(b)
    # Interleave: a forward_backward of B sits between A's forward_backward and A's optim_step.
    for step in range(4):
        engine.forward_backward("a", _batch(step))
        engine.forward_backward("b", _batch(100 + step))
        engine.optim_step("a", ADAM)
        if step == 0:
            assert all(p.grad is not None for p in b.params if p.requires_grad or True)
    engine.optim_step("b", ADAM)
    b_after_one = _weights(b)

    # Job A run alone on a fresh engine holding no other job: identical bits.
    alone = Engine(make_tiny_gemma(), None, base_model="tiny-test")
    a_alone = alone.create_model("a", LoraSpec(rank=4, seed=1))
    _train(alone, "a", range(4))
    assert _equal(_weights(a), _weights(a_alone))

    # B's adapter was not changed by A's four steps, and its one step equals B alone.
    b_alone_engine = Engine(make_tiny_gemma(), None, base_model="tiny-test")
    b_alone = b_alone_engine.create_model("b", LoraSpec(rank=8, seed=2))
    assert _equal(b_before, _weights(b_alone))
    for step in range(4):
        b_alone_engine.forward_backward("b", _batch(100 + step))
    b_alone_engine.optim_step("b", ADAM)
    assert _equal(b_after_one, _weights(b_alone))
    assert not _equal(b_before, b_after_one)


def test_a_batch_prepared_ahead_runs_like_forward_backward(engine) -> None:
    """The server checks and pads a batch on the request's thread, before the job's turn: that is no
    engine work, and running the batch later changes the job exactly as forward_backward would."""
    ahead = engine.create_model("ahead", LoraSpec(rank=4, seed=3))
    direct = engine.create_model("direct", LoraSpec(rank=4, seed=3))
    busy = engine.busy_seconds
    prepared = engine.prepare(_batch(7), "cross_entropy")
    assert engine.busy_seconds == busy
    assert all(p.grad is None for p in ahead.params)
    engine.forward_backward("ahead", _batch(8))  # another step between preparing and running
    engine.forward_backward("direct", _batch(8))
    out = engine.run_prepared("ahead", prepared)
    expected = engine.forward_backward("direct", _batch(7), "cross_entropy")
    assert out.metrics == expected.metrics
    assert ([o["logprobs"].data for o in out.loss_fn_outputs]
            == [o["logprobs"].data for o in expected.loss_fn_outputs])
    assert _equal([p.grad for p in ahead.params], [p.grad for p in direct.params])
    with pytest.raises(UserError, match="outside the model's vocabulary"):
        engine.prepare([types.Datum(model_input=types.ModelInput.from_ints([3, VOCAB + 5]),
                                    loss_fn_inputs={"target_tokens": [4, 5], "weights": [1.0, 1.0]})])
    assert engine.busy_seconds > busy


def test_same_seed_same_init_different_seed_differs(engine) -> None:
    a = engine.create_model("a", LoraSpec(rank=4, seed=7))
    b = engine.create_model("b", LoraSpec(rank=4, seed=7))
    c = engine.create_model("c", LoraSpec(rank=4, seed=8))
    assert _equal(_weights(a), _weights(b))
    assert not _equal(_weights(a), _weights(c))


def test_save_load_continue_equals_never_stopping(engine, tmp_path: Path) -> None:
    engine.create_model("run", LoraSpec(rank=4, seed=1))
    _train(engine, "run", range(3))
    engine.save_state("run", tmp_path / "ckpt")
    _train(engine, "run", range(3, 6))
    uninterrupted = _weights(engine._jobs["run"])

    resumed = Engine(make_tiny_gemma(), None, base_model="tiny-test")
    job = resumed.load_state("resumed", tmp_path / "ckpt")  # created from the checkpoint's LoRA spec
    assert job.step == 3 and job.spec.rank == 4
    _train(resumed, "resumed", range(3, 6))
    assert job.step == 6
    assert _equal(uninterrupted, _weights(job))


def test_load_without_optimizer_resets_adam(engine, tmp_path: Path) -> None:
    engine.create_model("run", LoraSpec(rank=4, seed=1))
    _train(engine, "run", range(2))
    engine.save_state("run", tmp_path / "ckpt")
    _train(engine, "run", range(2, 3))
    with_adam = _weights(engine._jobs["run"])
    other = Engine(make_tiny_gemma(), None, base_model="tiny-test")
    job = other.load_state("x", tmp_path / "ckpt", with_optimizer=False)
    assert not job.optimizer.state
    _train(other, "x", range(2, 3))
    assert not _equal(with_adam, _weights(job))


def test_checkpoint_write_is_atomic(engine, tmp_path: Path, monkeypatch) -> None:
    engine.create_model("run", LoraSpec(rank=4, seed=1))
    _train(engine, "run", range(1))
    target = tmp_path / "ckpt"
    engine.save_state("run", target)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in target.iterdir()}
    _train(engine, "run", range(1, 2))

    import kubetune.checkpoint.state as state_module

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(state_module.torch, "save", explode)
    with pytest.raises(OSError):
        engine.save_state("run", target)
    # The old checkpoint is intact and no temporary directory is left behind.
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in target.iterdir()} == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda d: [types.Datum(model_input=types.ModelInput.from_ints([5, 6, VOCAB + 3]),
                                loss_fn_inputs={"target_tokens": [6, 7, 8], "weights": [1.0] * 3})],
         "outside the model's vocabulary"),
        (lambda d: [types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7]),
                                loss_fn_inputs={"target_tokens": [6, 7], "weights": [1.0] * 2})],
         "must be [3]"),
        (lambda d: [types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7]),
                                loss_fn_inputs={"target_tokens": [6, 7, -1], "weights": [1.0] * 3})],
         "token id -1"),
        (lambda d: [types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7]),
                                loss_fn_inputs={"target_tokens": [6, 7, 8]})], "lacks ['weights']"),
        (lambda d: d + [types.Datum(model_input=types.ModelInput.from_ints([5] * 200),
                                    loss_fn_inputs={"target_tokens": [5] * 200, "weights": [1.0] * 200})],
         "context is 128"),
        (lambda d: [], "at least one Datum"),
    ],
)
def test_bad_requests_fail_cleanly_and_leave_every_job_untouched(engine, bad, message: str) -> None:
    a = engine.create_model("a", LoraSpec(rank=4, seed=1))
    b = engine.create_model("b", LoraSpec(rank=4, seed=2))
    engine.forward_backward("a", _batch(0))  # a has accumulated gradients that must survive
    grads = [p.grad.clone() for p in a.params]
    weights_a, weights_b = _weights(a), _weights(b)

    with pytest.raises(UserError) as error:
        engine.forward_backward("a", bad(_batch(1)))
    assert message in str(error.value)

    assert _equal(grads, [p.grad for p in a.params])
    assert _equal(weights_a, _weights(a)) and _equal(weights_b, _weights(b))
    assert all(p.grad is None for p in b.params)
    # Both jobs keep working.
    engine.optim_step("a", ADAM)
    engine.forward_backward("b", _batch(2))
    engine.optim_step("b", ADAM)
    assert a.step == 1 and b.step == 1


def test_clear_errors_for_unknown_things(engine, tmp_path: Path) -> None:
    engine.create_model("a", LoraSpec(rank=4, seed=1))
    with pytest.raises(UnknownModelError, match="no model 'nope'"):
        engine.forward_backward("nope", _batch(0))
    with pytest.raises(UserError, match="unknown loss_fn 'mse'"):
        engine.forward_backward("a", _batch(0), "mse")
    with pytest.raises(UserError, match="mean nothing to 'cross_entropy'"):
        engine.forward_backward("a", _batch(0), "cross_entropy", {"beta": 1.0})
    with pytest.raises(UserError, match="call forward_backward before optim_step"):
        engine.optim_step("a", ADAM)
    with pytest.raises(UserError, match="learning_rate"):
        engine.forward_backward("a", _batch(0))
        engine.optim_step("a", types.AdamParams(learning_rate=-1.0))
    with pytest.raises(UserError, match="already exists"):
        engine.create_model("a", LoraSpec(rank=4))
    with pytest.raises(UserError, match="serves 'tiny-test'"):
        engine.create_model("c", LoraSpec(rank=4), base_model="google/gemma-3-1b-it")
    with pytest.raises(UserError, match="rank"):
        engine.create_model("d", LoraSpec(rank=0))
    with pytest.raises(UserError, match="not a kubetune training checkpoint"):
        engine.load_state("a", tmp_path)
    with pytest.raises(UserError, match="ratio bounds"):
        engine.forward_backward("a", [], "ppo", {"clip_low_threshold": 0.2, "clip_high_threshold": 0.2})


def test_load_state_refuses_a_different_lora_shape(engine, tmp_path: Path) -> None:
    engine.create_model("a", LoraSpec(rank=4, seed=1))
    engine.save_state("a", tmp_path / "a")
    engine.create_model("b", LoraSpec(rank=8, seed=1))
    with pytest.raises(UserError, match="Load it into a new model"):
        engine.load_state("b", tmp_path / "a")


def test_delete_model_frees_the_adapter(engine) -> None:
    job = engine.create_model("a", LoraSpec(rank=4, seed=1))
    adapter = job.metadata["adapter"]
    engine.delete_model("a")
    assert adapter not in engine.peft.peft_config
    assert not any(f".{adapter}." in n for n, _ in engine.peft.named_parameters())
    with pytest.raises(UnknownModelError):
        engine.get_info("a")
