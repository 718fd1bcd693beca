"""DPO over the Tinker API: preference pairs from the policy's own samples, sigmoid loss, frozen reference.

1. Pairs. Either a JSONL file of ``{"prompt", "chosen", "rejected"}`` texts, or built from the
   starting policy: each of ``pair_prompts`` prompts of the ``rl`` split gets ``pair_samples``
   samples, scored by sandboxed execution; chosen = a sample that executes correctly, rejected =
   one that is wrong or invalid. With ``gold_fallback`` a prompt with no correct sample uses its
   gold SQL as chosen. Pairs and their reference log-probabilities are written to
   ``out_dir/pairs.jsonl`` once, so a resumed run trains on exactly the same pairs.
2. Reference. ``snapshot``: the starting policy (its weights frozen in a sampler snapshot);
   ``base``: the base model with the adapter off. Either way no second model is loaded.
3. Loss: ``-log σ(β·[(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))])`` averaged over the
   batch. ``loss_on="server"`` (default) sends kubetune's pairwise ``dpo`` loss: one forward and
   backward on the server. ``"client"`` computes it in this process through the SDK's
   ``forward_backward_custom`` (a forward pass more; works with any Tinker-compatible service);
   a server without the ``dpo`` loss makes the recipe switch to it, with a log line.

Logged per step: loss, preference accuracy (margin > 0), mean reward margin, chosen and rejected
implicit rewards ``β·(log π - log π_ref)``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tinker import types

from ..tasks.text2sql import load_split
from ..training_data import tokenize_pair
from .common import (
    DEFAULT_EVAL_SPLITS,
    RunLog,
    batch_indices,
    finish,
    open_trainer,
    prompt_tokens,
    score_group,
    should_save,
    tinker_session,
    training_endpoint,
)


@dataclass
class DPOConfig:
    data_dir: Path  # a dataset in Spider layout; its `rl` split gives the prompts
    out_dir: Path
    base_url: str | None = None
    base_model: str = "tiny"
    api_key: str = "tml-local"
    checkpoint_dir: Path | None = None  # embedded server's store; default out_dir/checkpoints
    init_state: str | None = None  # tinker:// state to start from (e.g. SFT's final); None: a fresh adapter
    pairs_file: Path | None = None  # JSONL {"prompt", "chosen", "rejected"}; None: sample them
    pair_prompts: int = 200
    pair_samples: int = 8
    gold_fallback: bool = False  # chosen = gold SQL when no sample of a prompt is correct
    temperature: float = 1.0
    max_tokens: int = 64
    max_prompt_tokens: int | None = 256  # longer prompts lose schema text from the left
    reference: Literal["snapshot", "base"] = "snapshot"
    loss_on: Literal["server", "client"] = "server"  # server: kubetune's `dpo` loss; client: forward_backward_custom
    # Defaults measured on the embedded task (docs/recipes.md): plain DPO (beta 0.1, no NLL term)
    # dragged the chosen answers' likelihood down with the rejected ones and cost 0.32 -> 0.03 accuracy.
    beta: float = 0.5
    nll_weight: float = 1.0  # + weight × the chosen answers' mean NLL (RPO's anchor); 0 for plain DPO
    steps: int = 100
    batch_size: int = 8  # pairs per step
    learning_rate: float = 3e-4
    lora_rank: int = 16
    train_unembed: bool = False  # for a fresh adapter: LoRA on lm_head too (see SFTConfig)
    seed: int = 0
    save_every: int = 50
    resume: bool = False
    eval_examples: int = 50
    eval_splits: tuple[str, ...] = field(default=DEFAULT_EVAL_SPLITS)

    def __post_init__(self) -> None:
        if self.reference not in ("snapshot", "base"):
            raise ValueError(f"reference must be 'snapshot' or 'base'; got {self.reference!r}")
        if self.loss_on not in ("server", "client"):
            raise ValueError(f"loss_on must be 'server' or 'client'; got {self.loss_on!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive; got {self.beta}")


@dataclass
class Pair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    ref_chosen: list[float] = field(default_factory=list)  # reference log-probability per chosen token
    ref_rejected: list[float] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, nll_weight: float = 0.0,
             chosen_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid DPO on summed sequence log-probabilities (one entry per pair), plus ``nll_weight`` times
    the chosen answers' mean per-token negative log-likelihood (needs ``chosen_tokens``)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    per_pair = -torch.nn.functional.logsigmoid(margin)
    if nll_weight:
        per_pair = per_pair - nll_weight * policy_chosen / chosen_tokens.clamp(min=1)
    loss = per_pair.mean()
    return loss, {
        "dpo_loss": float(loss.detach()),
        "preference_accuracy": float((margin > 0).float().mean()),
        "reward_margin": float(margin.detach().mean()),
        "chosen_reward": float(chosen_reward.detach().mean()),
        "rejected_reward": float(rejected_reward.detach().mean()),
    }


def pair_loss(batch: list[Pair], beta: float, nll_weight: float = 0.0):
    """The custom loss for ``forward_backward_custom`` over datums laid out chosen, rejected, chosen, …"""
    ref_chosen = torch.tensor([sum(p.ref_chosen) for p in batch])
    ref_rejected = torch.tensor([sum(p.ref_rejected) for p in batch])
    chosen_tokens = torch.tensor([float(len(p.chosen)) for p in batch])

    def loss_fn(datums: list[types.Datum], logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        summed = torch.stack([(lp * d.loss_fn_inputs["weights"].to_torch()).sum()
                              for d, lp in zip(datums, logprobs, strict=True)])
        return dpo_loss(summed[0::2], summed[1::2], ref_chosen, ref_rejected, beta, nll_weight, chosen_tokens)

    return loss_fn


def completion_datum(prompt: list[int], completion: list[int], ref_logprobs: list[float] | None = None) -> types.Datum:
    """Weight 1 on the completion's tokens, 0 on the prompt: the loss sums the completion's log-prob.
    With ``ref_logprobs`` (one per completion token) the datum also carries them for the server's ``dpo``."""
    tokens = prompt + completion
    pad = len(prompt) - 1
    inputs: dict = {"target_tokens": tokens[1:], "weights": [0.0] * pad + [1.0] * len(completion)}
    if ref_logprobs is not None:
        inputs["ref_logprobs"] = types.TensorData.from_numpy(np.asarray([0.0] * pad + list(ref_logprobs), np.float32))
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs=inputs)


def _server_step(trainer, batch: list[Pair], beta: float, nll_weight: float):
    """One forward_backward with the server's pairwise ``dpo`` loss; returns a function giving the metrics."""
    data = [d for p in batch for d in (completion_datum(p.prompt, p.chosen, p.ref_chosen),
                                       completion_datum(p.prompt, p.rejected, p.ref_rejected))]
    future = trainer.forward_backward(data, "dpo", {"beta": beta, "scale": 1.0 / len(batch), "nll_weight": nll_weight})

    def metrics() -> dict[str, float]:
        output = future.result()
        completions = [c for p in batch for c in (p.chosen, p.rejected)]
        summed = [float(np.sum(o["logprobs"].to_numpy()[-len(c):]))
                  for o, c in zip(output.loss_fn_outputs, completions, strict=True)]
        chosen = np.asarray(summed[0::2]) - [sum(p.ref_chosen) for p in batch]
        rejected = np.asarray(summed[1::2]) - [sum(p.ref_rejected) for p in batch]
        n = len(batch)
        return {"dpo_loss": output.metrics["loss:sum"], "preference_accuracy": output.metrics["dpo/correct:sum"] / n,
                "reward_margin": output.metrics["dpo/margin:sum"] / n, "chosen_reward": float(beta * chosen.mean()),
                "rejected_reward": float(beta * rejected.mean())}

    return metrics


def _client_step(trainer, batch: list[Pair], beta: float, nll_weight: float):
    """One forward_backward_custom with the loss computed here; returns a function giving the metrics."""
    data = [d for p in batch for d in (completion_datum(p.prompt, p.chosen), completion_datum(p.prompt, p.rejected))]
    future = trainer.forward_backward_custom(data, pair_loss(batch, beta, nll_weight))
    keys = ("dpo_loss", "preference_accuracy", "reward_margin", "chosen_reward", "rejected_reward")
    return lambda: {k: future.result().metrics[k] for k in keys}


def _sampled_pairs(sampler, tokenizer, config: DPOConfig, log) -> list[Pair]:
    data_dir = Path(config.data_dir)
    examples = load_split(data_dir, "rl")[: config.pair_prompts]
    if not examples:
        raise ValueError(f"{data_dir} has no `rl` split examples to build preference pairs from")
    params = types.SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed)
    prompts = [prompt_tokens(tokenizer, ex.prompt(data_dir), config.max_prompt_tokens) for ex in examples]
    futures = [sampler.sample(types.ModelInput.from_ints(p), config.pair_samples, params) for p in prompts]
    pairs, no_correct, no_wrong = [], 0, 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for example, prompt, future in zip(examples, prompts, futures, strict=True):
            sequences = future.result().sequences
            texts = [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in sequences]
            scored = score_group(data_dir, example, texts, "execution", pool)
            right = [list(s.tokens) for s, r in zip(sequences, scored, strict=True) if r.correct]
            wrong = [list(s.tokens) for s, r in zip(sequences, scored, strict=True) if not r.correct]
            if not wrong:
                no_wrong += 1
                continue
            if not right:
                no_correct += 1
                if not config.gold_fallback:
                    continue
                right = [tokenize_pair(tokenizer, "", example.completion).completion]
            pairs.append(Pair(prompt, right[0], wrong[0]))
    log(f"preference pairs: {len(pairs)} from {len(examples)} prompts ({no_correct} had no correct sample"
        f"{', gold used' if config.gold_fallback else ''}; {no_wrong} had no wrong one)")
    return pairs


def _file_pairs(path: Path, tokenizer) -> list[Pair]:
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        missing = {"prompt", "chosen", "rejected"} - set(record)
        if missing:
            raise ValueError(f"{path}:{number}: a preference pair needs prompt, chosen and rejected; missing {sorted(missing)}")
        chosen = tokenize_pair(tokenizer, record["prompt"], record["chosen"])
        rejected = tokenize_pair(tokenizer, record["prompt"], record["rejected"])
        pairs.append(Pair(chosen.prompt, chosen.completion, rejected.completion))
    return pairs


def _with_reference(pairs: list[Pair], reference) -> list[Pair]:
    """Fills each pair's summed reference log-probabilities (one compute_logprobs per sequence)."""
    def summed(prompt: list[int], completion: list[int]):
        return reference.compute_logprobs(types.ModelInput.from_ints(prompt + completion))

    futures = [(summed(p.prompt, p.chosen), summed(p.prompt, p.rejected)) for p in pairs]
    for pair, (chosen, rejected) in zip(pairs, futures, strict=True):
        pair.ref_chosen = [float(x) for x in chosen.result()[len(pair.prompt):]]
        pair.ref_rejected = [float(x) for x in rejected.result()[len(pair.prompt):]]
    return pairs


def run_dpo(config: DPOConfig, log=print) -> dict:
    """Builds pairs, trains, checkpoints, evaluates; returns the result (also ``out_dir/result.json``)."""
    import tinker

    run = RunLog(config.out_dir, config.resume)
    last = run.last_checkpoint() if config.resume else None
    checkpoint_dir = config.checkpoint_dir or Path(config.out_dir) / "checkpoints"
    pairs_path = Path(config.out_dir) / "pairs.jsonl"
    with training_endpoint(config.base_url, config.base_model, checkpoint_dir) as endpoint, \
            tinker_session(endpoint, config.api_key) as service:
        trainer, start = open_trainer(service, endpoint, last=last, init_state=config.init_state,
                                      lora_rank=config.lora_rank, seed=config.seed, log=log,
                                      train_unembed=config.train_unembed)
        tokenizer = trainer.get_tokenizer()
        if last is not None and pairs_path.is_file():
            pairs = [Pair(**json.loads(line)) for line in pairs_path.read_text().splitlines() if line.strip()]
        else:
            snapshot = trainer.save_weights_and_get_sampling_client().result()
            pairs = (_file_pairs(config.pairs_file, tokenizer) if config.pairs_file is not None
                     else _sampled_pairs(snapshot, tokenizer, config, log))
            if not pairs:
                raise ValueError("no preference pairs: every prompt's samples were all right or all wrong; sample more "
                                 "(pair_prompts, pair_samples), raise the temperature, or set gold_fallback")
            reference = snapshot if config.reference == "snapshot" else \
                service.create_sampling_client(base_model=endpoint.base_model).result()
            pairs = _with_reference(pairs, reference)
            pairs_path.write_text("".join(p.to_json() + "\n" for p in pairs))
        loss_on = config.loss_on
        for step in range(start, config.steps):
            batch = [pairs[i] for i in batch_indices(step, len(pairs), config.batch_size, config.seed)]
            if loss_on == "server":
                try:
                    step_metrics = _server_step(trainer, batch, config.beta, config.nll_weight)
                    if step == start:
                        step_metrics()  # surfaces a server without the loss before anything else runs
                except tinker.RequestFailedError as exc:
                    if "dpo" not in str(exc) or "unknown loss" not in str(exc).lower():
                        raise
                    log("this server has no `dpo` loss: computing DPO client-side (forward_backward_custom)")
                    loss_on = "client"
            if loss_on == "client":
                step_metrics = _client_step(trainer, batch, config.beta, config.nll_weight)
            opt = trainer.optim_step(types.AdamParams(learning_rate=config.learning_rate, grad_clip_norm=1.0))
            row = {"step": step, **step_metrics(), "grad_norm": opt.result().metrics.get("optim/grad_norm"),
                   "seconds": run.elapsed()}
            run.metrics(row)
            if step % 10 == 0 or step == config.steps - 1:
                log(f"step {step:4d}  loss {row['dpo_loss']:.4f}  pref-acc {row['preference_accuracy']:.2f}  "
                    f"margin {row['reward_margin']:.3f}  {row['seconds']:6.1f} s")
            if name := should_save(step, config.steps, config.save_every):
                run.checkpoint(step, name, trainer.save_state(name).result().path)
        return finish(service, trainer, tokenizer, endpoint, run, config, log, pairs=len(pairs))
