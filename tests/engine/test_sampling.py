"""Sampling: seeds, stops, logprobs consistent with training, and sampler weights PEFT/vLLM can load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from tinker import types

from kubetune.engine import Engine, LoraSpec, UserError

from helpers.models import VOCAB, make_tiny_gemma

PROMPT = [2, 17, 33, 5, 60, 41]


def _trained(engine: Engine, model_id: str = "a", steps: int = 3):
    job = engine.create_model(model_id, LoraSpec(rank=4, seed=1))
    tokens = list(range(10, 40))
    datum = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)})
    for _ in range(steps):
        engine.forward_backward(model_id, [datum])
        engine.optim_step(model_id, types.AdamParams(learning_rate=2e-2))
    return job


def _forward_logprobs(engine: Engine, model_id: str | None, sequence: list[int]) -> torch.Tensor:
    """Log-probabilities of sequence[1:] under a full (cache-free) forward pass."""
    datum = types.Datum(model_input=types.ModelInput.from_ints(sequence[:-1]),
                        loss_fn_inputs={"target_tokens": sequence[1:],
                                        "weights": [0.0] * (len(sequence) - 1)})
    return engine.forward(model_id, [datum]).loss_fn_outputs[0]["logprobs"].to_torch()


def test_seeded_sampling_is_reproducible(engine) -> None:
    _trained(engine)
    params = types.SamplingParams(max_tokens=12, seed=11, stop=[])
    one = engine.sample(PROMPT, 4, params, model_id="a")
    two = engine.sample(PROMPT, 4, params, model_id="a")
    other = engine.sample(PROMPT, 4, types.SamplingParams(max_tokens=12, seed=12, stop=[]), model_id="a")
    assert [s.tokens for s in one.sequences] == [s.tokens for s in two.sequences]
    assert [s.tokens for s in one.sequences] != [s.tokens for s in other.sequences]
    assert len({s.sequence_id for s in one.sequences}) == 4
    assert all(len(s.tokens) == 12 and s.stop_reason == "length" for s in one.sequences)


@pytest.mark.parametrize("prompt", [PROMPT, [2] + list(range(10, 60))], ids=["short", "past-sliding-window"])
def test_sampled_logprobs_equal_training_logprobs(engine, prompt: list[int]) -> None:
    """Cached decoding agrees with a full forward pass, also once the sliding window (32) is exceeded."""
    _trained(engine)
    response = engine.sample(prompt, 3, types.SamplingParams(max_tokens=10, seed=5, stop=[]), model_id="a")
    for seq in response.sequences:
        reference = _forward_logprobs(engine, "a", prompt + seq.tokens)[len(prompt) - 1:]
        torch.testing.assert_close(torch.tensor(seq.logprobs), reference, rtol=1e-4, atol=1e-4)


def test_greedy_matches_argmax_decoding_without_cache(engine, tiny_model) -> None:
    response = engine.sample(PROMPT, 1, types.SamplingParams(max_tokens=8, temperature=0.0, stop=[]))
    sequence = list(PROMPT)
    with torch.no_grad():
        for _ in range(8):
            sequence.append(int(tiny_model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax()))
    assert response.sequences[0].tokens == sequence[len(PROMPT):]
    top1 = engine.sample(PROMPT, 2, types.SamplingParams(max_tokens=8, top_k=1, seed=3, stop=[]))
    assert all(s.tokens == sequence[len(PROMPT):] for s in top1.sequences)


def test_stop_tokens_and_eos(engine) -> None:
    free = engine.sample(PROMPT, 1, types.SamplingParams(max_tokens=20, seed=1, stop=[])).sequences[0]
    stop_token = free.tokens[4]
    first = free.tokens.index(stop_token)
    stopped = engine.sample(PROMPT, 1,
                            types.SamplingParams(max_tokens=20, seed=1, stop=[stop_token])).sequences[0]
    assert stopped.stop_reason == "stop"
    assert stopped.tokens == free.tokens[: first + 1]  # the stop token is included, as vLLM returns it
    # stop=None stops at the model's EOS (id 1): forbid nothing, just check no token after an EOS.
    default = engine.sample(PROMPT, 8, types.SamplingParams(max_tokens=30, seed=2)).sequences
    for seq in default:
        assert 1 not in seq.tokens[:-1]
        assert (seq.stop_reason == "stop") == (seq.tokens[-1] == 1)


class _CharTokenizer:
    """A stand-in tokenizer (id -> one letter), enough for the sampler's stop-string matching."""

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_strings() -> None:
    engine = Engine(make_tiny_gemma(), _CharTokenizer(), base_model="tiny-test")
    free = engine.sample(PROMPT, 1, types.SamplingParams(max_tokens=20, seed=4, stop=[])).sequences[0]
    text = _CharTokenizer().decode(free.tokens)
    needle = text[5:7]
    stopped = engine.sample(PROMPT, 1,
                            types.SamplingParams(max_tokens=20, seed=4, stop=[needle])).sequences[0]
    end = text.index(needle) + len(needle)
    assert stopped.stop_reason == "stop" and stopped.tokens == free.tokens[:end]


def test_prompt_logprobs(engine) -> None:
    _trained(engine)
    logprobs = engine.compute_logprobs(PROMPT, model_id="a")
    assert logprobs[0] is None and len(logprobs) == len(PROMPT)
    torch.testing.assert_close(torch.tensor(logprobs[1:]), _forward_logprobs(engine, "a", PROMPT),
                               rtol=1e-5, atol=1e-5)


def test_base_sampling_ignores_adapters(engine, tiny_model) -> None:
    _trained(engine, steps=5)
    base = engine.compute_logprobs(PROMPT)
    adapted = engine.compute_logprobs(PROMPT, model_id="a")
    with torch.no_grad():
        plain = torch.log_softmax(tiny_model(input_ids=torch.tensor([PROMPT])).logits[0, :-1], -1)
    expected = plain.gather(-1, torch.tensor(PROMPT[1:])[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(base[1:]), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.tensor(adapted[1:]), expected, atol=1e-3)


def test_sampler_weights_are_a_plain_peft_adapter(engine, tmp_path: Path) -> None:
    _trained(engine)
    path = engine.save_weights_for_sampler("a", tmp_path / "sampler")
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    # PEFT loads it unchanged onto a fresh copy of the base and gives the engine's log-probabilities.
    loaded = PeftModel.from_pretrained(make_tiny_gemma(), str(path)).eval()
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor([PROMPT])).logits[0, :-1]
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(PROMPT[1:])[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(engine.compute_logprobs(PROMPT, model_id="a")[1:]), expected,
                               rtol=1e-5, atol=1e-5)
    # Sampling from the saved weights equals sampling from the live job with the same seed.
    params = types.SamplingParams(max_tokens=10, seed=9, stop=[])
    live = engine.sample(PROMPT, 3, params, model_id="a")
    saved = engine.sample(PROMPT, 3, params, sampler_path=path)
    assert [s.tokens for s in live.sequences] == [s.tokens for s in saved.sequences]


@pytest.mark.parametrize(
    ("params", "n", "message"),
    [
        (types.SamplingParams(max_tokens=4), 0, "num_samples"),
        (types.SamplingParams(max_tokens=4, top_p=0.0), 1, "top_p"),
        (types.SamplingParams(max_tokens=4, top_k=0), 1, "top_k"),
        (types.SamplingParams(max_tokens=4, temperature=-1.0), 1, "temperature"),
        (types.SamplingParams(max_tokens=0), 1, "max_tokens"),
    ],
)
def test_bad_sampling_params(engine, params, n: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        engine.sample(PROMPT, n, params)


def test_bad_prompts(engine, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="outside the model's vocabulary"):
        engine.sample([5, VOCAB], 1)
    with pytest.raises(UserError, match="context is 128"):
        engine.sample([5] * 128, 1)
    with pytest.raises(UserError, match="no sampler weights"):
        engine.sample(PROMPT, 1, sampler_path=tmp_path)


def test_batched_prompts_match_one_at_a_time(engine) -> None:
    """Left padding changes nothing: a batch of prompts of different lengths decodes like each alone."""
    _trained(engine)
    prompts = [PROMPT, [2, 40, 41], [2] + list(range(10, 30)), [2, 7]]
    greedy = types.SamplingParams(max_tokens=8, temperature=0.0, stop=[])
    batched = engine.sample_batch(prompts, 1, greedy, model_id="a", prompt_logprobs=True)
    for prompt, response in zip(prompts, batched, strict=True):
        alone = engine.sample(prompt, 1, greedy, model_id="a", prompt_logprobs=True)
        assert response.sequences[0].tokens == alone.sequences[0].tokens
        torch.testing.assert_close(torch.tensor(response.sequences[0].logprobs),
                                   torch.tensor(alone.sequences[0].logprobs), rtol=1e-4, atol=1e-4)
        assert response.prompt_logprobs[0] is None
        torch.testing.assert_close(torch.tensor(response.prompt_logprobs[1:]),
                                   torch.tensor(alone.prompt_logprobs[1:]), rtol=1e-4, atol=1e-4)
    # Several samples per prompt in one batch: each row is a continuation of its own prompt.
    many = engine.sample_batch(prompts[:2], 3, types.SamplingParams(max_tokens=6, seed=1, stop=[]),
                               model_id="a")
    for prompt, response in zip(prompts[:2], many, strict=True):
        assert len(response.sequences) == 3
        for seq in response.sequences:
            reference = _forward_logprobs(engine, "a", prompt + seq.tokens)[len(prompt) - 1:]
            torch.testing.assert_close(torch.tensor(seq.logprobs), reference, rtol=1e-4, atol=1e-4)
