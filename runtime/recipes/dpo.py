"""DPO over the Tinker API: preference pairs from the policy's own samples, sigmoid loss, frozen reference.

1. Pairs. Either a JSONL file of ``{"prompt", "chosen", "rejected"}`` texts, or built from the
   starting policy: each of ``pair_prompts`` prompts of the ``rl`` split gets ``pair_samples``
   samples, scored by sandboxed execution; chosen = a sample that executes correctly, rejected =
   one that is wrong or invalid. With ``gold_fallback`` a prompt with no correct sample uses its
   gold SQL as chosen. Pairs and their reference log-probabilities are written to
   ``out_dir/pairs.jsonl`` once, so a resumed run trains on exactly the same pairs.
2. Reference. ``snapshot``: the starting policy (its weights frozen in a sampler snapshot);
   ``base``: the base model with the adapter off. Either way no second model is loaded.
3. Loss: :func:`kubetune.losses.dpo_loss`, ``-log σ(β·[(log π(c) - log π_ref(c)) - (log π(r) -
   log π_ref(r))])`` plus ``nll_weight`` times the chosen answer's mean NLL, averaged over the
   batch. ``loss_on="server"`` (default) sends kubetune's pairwise ``dpo`` loss: one forward and
   backward on the server. ``"client"`` computes the same objective in this process through the
   SDK's ``forward_backward_custom`` (a forward pass more; works with any Tinker-compatible service,
   e.g. one without kubetune's ``dpo`` loss).

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

from ..losses import dpo_loss
from ..reward import reward_task
from ..tasks.text2sql import load_split
from .common import RunLog, RunSettings, finish, open_trainer, served_model, should_save, tinker_session
from .data import batch_indices, completion_datum, prompt_tokens, tokenize_pair


@dataclass
class DPOConfig(RunSettings):
    """DPO on preference pairs from the starting policy's samples of the `rl` split (or a file)."""

    init_state: str | None = None  # tinker:// state to start from (e.g. SFT's final); None: a fresh adapter
    pairs_file: Path | None = None  # JSONL {"prompt", "chosen", "rejected"}; None: sample them
    pair_prompts: int = 200  # rl-split prompts sampled to build pairs
    pair_samples: int = 8  # samples per prompt when building pairs
    # chosen = the gold SQL when no sample of a prompt is correct: on the tiny model most prompts
    # have none, and without it too few pairs remain (docs/recipes.md).
    gold_fallback: bool = True
    temperature: float = 1.0
    max_tokens: int = 64  # new tokens per sample
    reference: Literal["snapshot", "base"] = "snapshot"  # the starting policy, or the base (adapter off)
    # server: kubetune's `dpo` loss; client: forward_backward_custom
    loss_on: Literal["server", "client"] = "server"
    # Defaults measured on the embedded task (docs/recipes.md): plain DPO (beta 0.1, no NLL term)
    # dragged the chosen answers' likelihood down with the rejected ones and cost 0.32 -> 0.03 accuracy.
    beta: float = 0.5
    nll_weight: float = 1.0  # + weight × the chosen answers' mean NLL (RPO's anchor); 0 for plain DPO
    steps: int = 60
    batch_size: int = 8  # pairs per step
    learning_rate: float = 3e-4  # constant

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


def pair_loss(batch: list[Pair], beta: float, nll_weight: float = 0.0):
    """The custom loss for ``forward_backward_custom`` over datums laid out chosen, rejected, chosen, …"""
    ref_chosen = torch.tensor([sum(p.ref_chosen) for p in batch])
    ref_rejected = torch.tensor([sum(p.ref_rejected) for p in batch])
    chosen_tokens = torch.tensor([float(len(p.chosen)) for p in batch])

    def loss_fn(datums: list[types.Datum],
                logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        summed = torch.stack([(lp * d.loss_fn_inputs["weights"].to_torch()).sum()
                              for d, lp in zip(datums, logprobs, strict=True)])
        per_pair, parts = dpo_loss(summed[0::2], summed[1::2], ref_chosen, ref_rejected, beta, nll_weight,
                                   chosen_tokens)
        loss = per_pair.mean()
        return loss, {"dpo_loss": float(loss.detach()),
                      "preference_accuracy": float((parts["margin"] > 0).float().mean()),
                      "reward_margin": float(parts["margin"].mean()),
                      "chosen_reward": float(parts["chosen_reward"].mean()),
                      "rejected_reward": float(parts["rejected_reward"].mean())}

    return loss_fn


def pair_datum(prompt: list[int], completion: list[int],
               ref_logprobs: list[float] | None = None) -> types.Datum:
    """Weight 1 on the completion's tokens, 0 on the prompt: the loss sums the completion's log-prob.
    With ``ref_logprobs`` (one per completion token) the datum also carries them for the server's ``dpo``."""
    extra = {"ref_logprobs": ref_logprobs} if ref_logprobs is not None else {}
    return completion_datum(prompt, completion, weights=[1.0] * len(completion), **extra)


def _server_step(trainer, batch: list[Pair], beta: float, nll_weight: float):
    """One forward_backward with the server's pairwise ``dpo`` loss; returns a function giving the metrics."""
    data = [d for p in batch for d in (pair_datum(p.prompt, p.chosen, p.ref_chosen),
                                       pair_datum(p.prompt, p.rejected, p.ref_rejected))]
    future = trainer.forward_backward(data, "dpo", {"beta": beta, "scale": 1.0 / len(batch),
                                                    "nll_weight": nll_weight})

    def metrics() -> dict[str, float]:
        output = future.result()
        completions = [c for p in batch for c in (p.chosen, p.rejected)]
        summed = [float(np.sum(o["logprobs"].to_numpy()[-len(c):]))
                  for o, c in zip(output.loss_fn_outputs, completions, strict=True)]
        chosen = np.asarray(summed[0::2]) - [sum(p.ref_chosen) for p in batch]
        rejected = np.asarray(summed[1::2]) - [sum(p.ref_rejected) for p in batch]
        n = len(batch)
        return {"dpo_loss": output.metrics["loss:sum"],
                "preference_accuracy": output.metrics["dpo/correct:sum"] / n,
                "reward_margin": output.metrics["dpo/margin:sum"] / n,
                "chosen_reward": float(beta * chosen.mean()),
                "rejected_reward": float(beta * rejected.mean())}

    return metrics


def _client_step(trainer, batch: list[Pair], beta: float, nll_weight: float):
    """One forward_backward_custom with the loss computed here; returns a function giving the metrics."""
    data = [d for p in batch for d in (pair_datum(p.prompt, p.chosen), pair_datum(p.prompt, p.rejected))]
    future = trainer.forward_backward_custom(data, pair_loss(batch, beta, nll_weight))
    keys = ("dpo_loss", "preference_accuracy", "reward_margin", "chosen_reward", "rejected_reward")
    return lambda: {k: future.result().metrics[k] for k in keys}


def _sampled_pairs(sampler, tokenizer, config: DPOConfig, log) -> list[Pair]:
    data_dir = Path(config.data_dir)
    examples = load_split(data_dir, "rl")[: config.pair_prompts]
    if not examples:
        raise ValueError(f"{data_dir} has no `rl` split examples to build preference pairs from")
    params = types.SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature,
                                  seed=config.seed)
    prompts = [prompt_tokens(tokenizer, ex.prompt(data_dir), config.max_prompt_tokens) for ex in examples]
    futures = [sampler.sample(types.ModelInput.from_ints(p), config.pair_samples, params) for p in prompts]
    pairs, no_correct, no_wrong = [], 0, 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for example, prompt, future in zip(examples, prompts, futures, strict=True):
            sequences = future.result().sequences
            texts = [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in sequences]
            scored = reward_task("text2sql").score_group(data_dir, example, texts, "execution", pool)
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
            raise ValueError(f"{path}:{number}: a preference pair needs prompt, chosen and rejected; "
                             f"missing {sorted(missing)}")
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


def _pairs(service, trainer, tokenizer, config: DPOConfig, resumed: bool, log) -> list[Pair]:
    """The run's preference pairs with their reference log-probabilities: read back from
    ``out_dir/pairs.jsonl`` on resume, else built (sampled or from ``pairs_file``) and written there."""
    pairs_path = Path(config.out_dir) / "pairs.jsonl"
    if resumed and pairs_path.is_file():
        return [Pair(**json.loads(line)) for line in pairs_path.read_text().splitlines() if line.strip()]
    snapshot = trainer.save_weights_and_get_sampling_client().result()
    pairs = (_file_pairs(config.pairs_file, tokenizer) if config.pairs_file is not None
             else _sampled_pairs(snapshot, tokenizer, config, log))
    if not pairs:
        raise ValueError("no preference pairs: every prompt's samples were all right or all wrong; "
                         "sample more (pair_prompts, pair_samples), raise the temperature, "
                         "or set gold_fallback")
    reference = snapshot if config.reference == "snapshot" else \
        service.create_sampling_client(base_model=served_model(config)).result()
    pairs = _with_reference(pairs, reference)
    pairs_path.write_text("".join(p.to_json() + "\n" for p in pairs))
    return pairs


def run_dpo(config: DPOConfig, log=print) -> dict:
    """Builds pairs, trains, checkpoints, evaluates; returns the result (also ``out_dir/result.json``)."""
    run = RunLog(config.out_dir, config.resume)
    with tinker_session(config.base_url, config.api_key) as service:
        trainer, start = open_trainer(service, config, run, log, init_state=config.init_state)
        tokenizer = trainer.get_tokenizer()
        pairs = _pairs(service, trainer, tokenizer, config, start > 0, log)
        step_fn = _server_step if config.loss_on == "server" else _client_step
        for step in range(start, config.steps):
            batch = [pairs[i] for i in batch_indices(step, len(pairs), config.batch_size, config.seed)]
            step_metrics = step_fn(trainer, batch, config.beta, config.nll_weight)
            opt = trainer.optim_step(types.AdamParams(learning_rate=config.learning_rate, grad_clip_norm=1.0))
            row = {"step": step, **step_metrics(), "grad_norm": opt.result().metrics.get("optim/grad_norm"),
                   "seconds": run.elapsed()}
            run.metrics(row)
            if step % 10 == 0 or step == config.steps - 1:
                log(f"step {step:4d}  loss {row['dpo_loss']:.4f}  pref-acc {row['preference_accuracy']:.2f}  "
                    f"margin {row['reward_margin']:.3f}  {row['seconds']:6.1f} s")
            if name := should_save(step, config.steps, config.save_every):
                run.checkpoint(step, name, trainer.save_state(name).result().path)
        return finish(service, trainer, tokenizer, run, config, log, pairs=len(pairs))
