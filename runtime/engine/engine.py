"""The training engine: ONE base model, many LoRA adapters (one per job), Tinker's four primitives.

Every job is a PEFT adapter inside one shared ``PeftModel``; creating a job never loads weights
again. Operations hold the engine lock from start to end, so an adapter is never switched in the
middle of one, and each validates its whole request before touching any state, so a bad request
fails cleanly and leaves every job as it was. Gradients accumulate on a job's own LoRA tensors
across ``forward_backward`` calls until its ``optim_step``, untouched by other jobs' operations
because inactive adapters take no part in the forward pass.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import random
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
import torch.nn.functional as F
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from tinker import types

from ..checkpoint import TrainingState, read_sampler_config, read_state, write_sampler_weights, write_state
from ..errors import UnknownModelError, UserError
from ..losses import LossSpec, get_loss
from . import sampler
from .adapters import Job, LoraSpec, linear_layers, target_modules
from .batch import Batch, check_token_ids, collate, tokens_of

log = logging.getLogger(__name__)

_PLACEHOLDER = "kubetune_placeholder"  # keeps the PeftModel alive with zero jobs; never active
DEFAULT_LORA_ALPHA = 32.0
# Sampler adapters loaded from disk, kept for reuse; an RL loop publishes a new snapshot every step,
# so the least recently used ones are unloaded beyond this many.
MAX_SAMPLER_ADAPTERS = 8


@dataclass(frozen=True)
class PreparedBatch:
    """A forward_backward batch checked against its loss and padded (:meth:`Engine.prepare`)."""

    loss: LossSpec
    config: dict[str, float]
    batch: Batch


class Engine:
    """Serves many LoRA training jobs on one base model.

    Args:
        model: the base causal LM (its weights are frozen and shared by every job).
        tokenizer: its tokenizer (stop strings are matched on decoded text).
        base_model: the name clients use for this base model (checked on job creation and load).
        device: where to run; defaults to the model's device.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, base_model: str,
                 device: torch.device | None = None):
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        model.to(self.device)
        model.eval()  # no dropout anywhere: results depend only on inputs and seeds
        for param in model.parameters():
            param.requires_grad_(False)
        config = model.config
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.max_length = int(getattr(config, "max_position_embeddings", 2048))
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = int(getattr(config, "pad_token_id", None) or 0)
        self._layers = linear_layers(model)
        first_linear = next(iter(self._layers))
        placeholder = peft.LoraConfig(r=1, target_modules=[first_linear], lora_dropout=0.0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
            self.peft = peft.get_peft_model(model, placeholder, adapter_name=_PLACEHOLDER)
        self.peft.eval()
        self._jobs: dict[str, Job] = {}
        # (path, mtime_ns) -> adapter, LRU order
        self._samplers: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._names = itertools.count()
        self._lock = threading.RLock()
        self._generator = torch.Generator(device="cpu").manual_seed(random.SystemRandom().randrange(2**63))
        self.busy_seconds = 0.0  # time spent inside operations: the engine's duty cycle

    # ------------------------------------------------------------------ jobs
    @property
    def model_ids(self) -> list[str]:
        return list(self._jobs)

    def create_model(self, model_id: str, spec: LoraSpec | None = None, *,
                     base_model: str | None = None) -> Job:
        """Adds a LoRA adapter for a new job. Its initial weights depend only on ``spec.seed``."""
        spec = spec or LoraSpec()
        spec.validate()
        self._check_base(base_model)
        with self._operation():
            if model_id in self._jobs:
                raise UserError(f"model {model_id!r} already exists; pick a new id or load_state into it")
            adapter = f"job{next(self._names)}"
            config = peft.LoraConfig(
                r=spec.rank,
                lora_alpha=spec.alpha if spec.alpha is not None else DEFAULT_LORA_ALPHA,
                target_modules=target_modules(self._layers, spec),
                lora_dropout=0.0,
                bias="none",
            )
            seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**31)
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                # A LoRA delta on a tied lm_head is not tied itself; PEFT's warning about it does not apply.
                warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
                torch.manual_seed(seed)
                self.peft.add_adapter(adapter, config)
            params = [p for name, p in self.peft.named_parameters() if f".{adapter}." in name]
            for param in params:
                param.requires_grad_(True)
            defaults = types.AdamParams()
            optimizer = torch.optim.AdamW(
                params,
                lr=defaults.learning_rate,
                betas=(defaults.beta1, defaults.beta2),
                eps=defaults.eps,
                weight_decay=defaults.weight_decay,
            )
            job = Job(
                model_id=model_id,
                spec=spec,
                params=params,
                optimizer=optimizer,
                generator=torch.Generator(device="cpu").manual_seed(seed),
                metadata={"adapter": adapter},
            )
            self._jobs[model_id] = job
            log.info("created job %s (rank %d, %d trainable params)", model_id, spec.rank,
                     job.trainable_parameters())
            return job

    def delete_model(self, model_id: str) -> None:
        """Drops a job and frees its adapter and optimizer state."""
        with self._operation():
            job = self._job(model_id)
            self.peft.base_model.delete_adapter(job.metadata["adapter"])
            self.peft.base_model.set_adapter(_PLACEHOLDER)
            del self._jobs[model_id]

    def get_info(self, model_id: str) -> dict[str, Any]:
        job = self._job(model_id)
        return {
            "model_id": model_id,
            "base_model": self.base_model,
            "lora": asdict(job.spec),
            "step": job.step,
            "tokens_trained": job.tokens_trained,
            "trainable_parameters": job.trainable_parameters(),
        }

    # ---------------------------------------------------- data in / data out
    def forward_backward(
        self,
        model_id: str,
        data: Sequence[types.Datum],
        loss_fn: str = "cross_entropy",
        loss_fn_config: Mapping[str, float] | None = None,
        *,
        forward_only: bool = False,
    ) -> types.ForwardBackwardOutput:
        """Computes the loss and (unless ``forward_only``) adds its gradient to the job's accumulators."""
        return self.run_prepared(model_id, self.prepare(data, loss_fn, loss_fn_config),
                                 forward_only=forward_only)

    def prepare(self, data: Sequence[types.Datum], loss_fn: str = "cross_entropy",
                loss_fn_config: Mapping[str, float] | None = None) -> PreparedBatch:
        """Checks a batch against its loss and pads it, touching no engine state.

        Safe on any thread: a server prepares a request's batch while the engine computes another
        job's, so the engine's turn holds only the compute (see :meth:`run_prepared`).
        """
        loss = get_loss(loss_fn)
        config = dict(loss_fn_config or {})
        loss.check_config(loss_fn, config)
        return PreparedBatch(loss, config, collate(data, loss, self.vocab_size, self.max_length))

    def run_prepared(self, model_id: str, prepared: PreparedBatch, *,
                     forward_only: bool = False) -> types.ForwardBackwardOutput:
        """:meth:`forward_backward` of a batch from :meth:`prepare`."""
        loss, config, batch = prepared.loss, prepared.config, prepared.batch
        with self._operation():
            job = self._job(model_id)
            with self._adapter(job.metadata["adapter"]), torch.set_grad_enabled(not forward_only):
                target_lp = self._target_logprobs(batch.input_ids, batch.attention_mask, batch.target_tokens)
                rows = [target_lp[row, :n] for row, n in enumerate(batch.lengths)]
                row_inputs = [{name: t[row, :n].to(self.device) for name, t in batch.inputs.items()}
                              for row, n in enumerate(batch.lengths)]
                metrics: dict[str, float] = {}
                if loss.pairwise:
                    total, per_token, metrics = loss.fn(rows, row_inputs, config)
                else:
                    total, per_token = torch.zeros((), device=self.device), []
                    for logprobs, inputs in zip(rows, row_inputs, strict=True):
                        datum_loss, datum_per_token = loss.fn(logprobs, inputs, config)
                        total = total + datum_loss
                        per_token.append(datum_per_token)
                outputs = [
                    {
                        "logprobs": types.TensorData.from_numpy(logprobs.detach().float().cpu().numpy()),
                        "elementwise_loss": types.TensorData.from_numpy(
                            elementwise.detach().float().cpu().numpy()),
                    }
                    for logprobs, elementwise in zip(rows, per_token, strict=True)
                ]
                if not forward_only:
                    total.backward()
                    job.tokens_trained += sum(batch.lengths)
            return types.ForwardBackwardOutput(
                loss_fn_output_type="ArrayRecord", loss_fn_outputs=outputs,
                metrics={"loss:sum": float(total.detach()), **metrics},
            )

    def forward(self, model_id: str, data: Sequence[types.Datum], loss_fn: str = "cross_entropy",
                loss_fn_config: Mapping[str, float] | None = None) -> types.ForwardBackwardOutput:
        """Like :meth:`forward_backward` without gradients: evaluation and reference log-probabilities."""
        return self.forward_backward(model_id, data, loss_fn, loss_fn_config, forward_only=True)

    def optim_step(self, model_id: str, params: types.AdamParams | None = None) -> dict[str, float]:
        """One AdamW step on the job's accumulated gradients, then zeroes them."""
        params = params or types.AdamParams()
        _check_adam(params)
        with self._operation():
            job = self._job(model_id)
            grads = [p.grad for p in job.params if p.grad is not None]
            if not grads:
                raise UserError(f"model {model_id!r} has no gradients; "
                                "call forward_backward before optim_step")
            if params.grad_clip_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(job.params, params.grad_clip_norm)
            else:
                grad_norm = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            for group in job.optimizer.param_groups:
                group["lr"] = params.learning_rate
                group["betas"] = (params.beta1, params.beta2)
                group["eps"] = params.eps
                group["weight_decay"] = params.weight_decay
            job.optimizer.step()
            job.optimizer.zero_grad(set_to_none=True)
            job.step += 1
            return {"optim/grad_norm": float(grad_norm), "optim/lr": params.learning_rate,
                    "optim/step": float(job.step)}

    # --------------------------------------------------------------- sampling
    def sample(
        self,
        prompt: types.ModelInput | Sequence[int],
        num_samples: int = 1,
        sampling_params: types.SamplingParams | None = None,
        *,
        model_id: str | None = None,
        sampler_path: str | Path | None = None,
        prompt_logprobs: bool = False,
    ) -> types.SampleResponse:
        """Samples from a live job (``model_id``), saved sampler weights (``sampler_path``) or the base."""
        return self.sample_batch([prompt], num_samples, sampling_params, model_id=model_id,
                                 sampler_path=sampler_path, prompt_logprobs=prompt_logprobs)[0]

    def sample_batch(
        self,
        prompts: Sequence[types.ModelInput | Sequence[int]],
        num_samples: int = 1,
        sampling_params: types.SamplingParams | None = None,
        *,
        model_id: str | None = None,
        sampler_path: str | Path | None = None,
        prompt_logprobs: bool = False,
    ) -> list[types.SampleResponse]:
        """Like :meth:`sample` for several prompts of one adapter at once (one left-padded batch)."""
        if model_id is not None and sampler_path is not None:
            raise UserError("sample from a model_id or a sampler_path, not both")
        params = sampling_params or types.SamplingParams()
        token_lists = [
            tokens_of(p, self.vocab_size, "prompt") if isinstance(p, types.ModelInput)
            else _checked(list(p), self.vocab_size)
            for p in prompts
        ]
        with self._operation():
            generator = self._generator
            if model_id is not None:
                job = self._job(model_id)
                adapter, generator = job.metadata["adapter"], job.generator
            elif sampler_path is not None:
                adapter = self._sampler_adapter(Path(sampler_path))
            else:
                adapter = None
            with self._adapter(adapter):
                return sampler.sample(
                    self.peft,
                    self.tokenizer,
                    token_lists,
                    num_samples,
                    params,
                    eos_ids=self.eos_ids,
                    max_length=self.max_length,
                    generator=generator,
                    device=self.device,
                    pad_id=self.pad_id,
                    prompt_logprobs=prompt_logprobs,
                )

    def compute_logprobs(self, prompt: types.ModelInput | Sequence[int], *, model_id: str | None = None,
                         sampler_path: str | Path | None = None) -> list[float | None]:
        """Log-probability of each prompt token given the ones before it (``None`` for the first)."""
        response = self.sample(
            prompt, 1, types.SamplingParams(max_tokens=1), model_id=model_id, sampler_path=sampler_path,
            prompt_logprobs=True,
        )
        return response.prompt_logprobs or []

    # ------------------------------------------------------------ checkpoints
    def save_state(self, model_id: str, path: str | Path, *, with_optimizer: bool = True) -> Path:
        """Writes adapter + optimizer + RNG + step atomically; ``load_state`` continues bit for bit."""
        with self._operation():
            job = self._job(model_id)
            state = TrainingState(
                model_id=model_id,
                base_model=self.base_model,
                lora=asdict(job.spec),
                step=job.step,
                tokens_trained=job.tokens_trained,
                adapter=self._adapter_tensors(job),
                optimizer=copy.deepcopy(job.optimizer.state_dict()) if with_optimizer else None,
                rng=job.generator.get_state(),
            )
            return write_state(path, state)

    def load_state(self, model_id: str, path: str | Path, *, with_optimizer: bool = True) -> Job:
        """Loads a checkpoint into a job, creating the job from the checkpoint's LoRA spec if needed."""
        state = _read(path, with_optimizer)
        self._check_base(state.base_model, what=f"checkpoint {path}")
        spec = LoraSpec(**state.lora)
        with self._operation():
            job = self._jobs.get(model_id) or self.create_model(model_id, spec)
            if (job.spec.rank, job.spec.train_attn, job.spec.train_mlp, job.spec.train_unembed) != (
                spec.rank, spec.train_attn, spec.train_mlp, spec.train_unembed
            ):
                raise UserError(
                    f"checkpoint {path} holds a LoRA of {state.lora}; model {model_id!r} was created with "
                    f"{asdict(job.spec)}. Load it into a new model instead"
                )
            adapter = job.metadata["adapter"]
            result = set_peft_model_state_dict(self.peft, state.adapter, adapter_name=adapter)
            missing = [k for k in result.missing_keys if f".{adapter}." in k]
            if missing:
                raise UserError(f"checkpoint {path} lacks {len(missing)} LoRA tensors, e.g. {missing[0]}")
            job.optimizer.state.clear()
            if state.optimizer is not None:
                job.optimizer.load_state_dict(state.optimizer)
            for param in job.params:
                param.grad = None
            if state.rng is not None:
                job.generator.set_state(state.rng)
            job.step = state.step
            job.tokens_trained = state.tokens_trained
            return job

    def save_weights_for_sampler(self, model_id: str, path: str | Path) -> Path:
        """Writes the job's adapter as a plain PEFT directory (PeftModel.from_pretrained, vLLM)."""
        with self._operation():
            job = self._job(model_id)
            adapter = job.metadata["adapter"]
            config = copy.deepcopy(self.peft.peft_config[adapter])
            config.base_model_name_or_path = self.base_model
            config.target_modules = sorted({name.rsplit(".", 1)[-1] for name in config.target_modules})
            config.inference_mode = True
            return write_sampler_weights(path, self._adapter_tensors(job), config)

    # -------------------------------------------------------------- internals
    def _target_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
        logits = self.peft(input_ids=input_ids.to(self.device),
                           attention_mask=attention_mask.to(self.device)).logits
        batch, width, vocab = logits.shape
        # Fused log-softmax + gather: never materialises (B, T, V) log-probabilities for big vocabularies.
        nll = F.cross_entropy(logits.float().reshape(-1, vocab), targets.to(self.device).reshape(-1),
                              reduction="none")
        return -nll.view(batch, width)

    def _adapter_tensors(self, job: Job) -> dict[str, torch.Tensor]:
        # The LoRA tensors only: with a tied lm_head PEFT would otherwise copy the whole embedding matrix.
        state = get_peft_model_state_dict(self.peft, adapter_name=job.metadata["adapter"],
                                          save_embedding_layers=False)
        return {k: v.detach().clone().cpu() for k, v in state.items()}

    def _sampler_adapter(self, path: Path) -> str:
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            raise UnknownModelError(f"no sampler weights at {path}; "
                                    "save them with save_weights_for_sampler first")
        key = (str(path.resolve()), weights.stat().st_mtime_ns)
        name = self._samplers.get(key)
        if name is not None:
            self._samplers.move_to_end(key)
        else:
            config = read_sampler_config(path)
            self._check_base(config.get("base_model_name_or_path"), what=f"sampler weights {path}")
            name = f"sampler{next(self._names)}"
            self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
            self._samplers[key] = name
            while len(self._samplers) > MAX_SAMPLER_ADAPTERS:
                _, stale = self._samplers.popitem(last=False)
                self.peft.base_model.delete_adapter(stale)
                self.peft.base_model.set_adapter(_PLACEHOLDER)
        return name

    @contextlib.contextmanager
    def _adapter(self, name: str | None) -> Iterator[None]:
        if name is None:
            with self.peft.disable_adapter():
                yield
            return
        self.peft.base_model.set_adapter(name)
        try:
            yield
        finally:
            self.peft.base_model.set_adapter(_PLACEHOLDER)

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        with self._lock:
            started = time.perf_counter()
            try:
                yield
            finally:
                self.busy_seconds += time.perf_counter() - started

    def _job(self, model_id: str) -> Job:
        try:
            return self._jobs[model_id]
        except KeyError:
            raise UnknownModelError(f"no model {model_id!r} on this engine; create it first") from None

    def _check_base(self, base_model: str | None, what: str = "request") -> None:
        if base_model and base_model != self.base_model:
            raise UserError(f"{what} is for base model {base_model!r}; "
                            f"this engine serves {self.base_model!r}")


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]


def _checked(tokens: list[int], vocab_size: int) -> list[int]:
    check_token_ids(tokens, vocab_size, "prompt")
    return tokens


def _check_adam(params: types.AdamParams) -> None:
    problems = []
    if not np.isfinite(params.learning_rate) or params.learning_rate < 0:
        problems.append(f"learning_rate={params.learning_rate} (needs >= 0)")
    if not (0 <= params.beta1 < 1 and 0 <= params.beta2 < 1):
        problems.append(f"beta1={params.beta1}, beta2={params.beta2} (need 0 <= beta < 1)")
    if params.eps <= 0:
        problems.append(f"eps={params.eps} (needs > 0)")
    if params.weight_decay < 0 or params.grad_clip_norm < 0:
        problems.append("weight_decay and grad_clip_norm must be >= 0")
    if problems:
        raise UserError("invalid AdamParams: " + "; ".join(problems))


def _read(path: str | Path, with_optimizer: bool) -> TrainingState:
    try:
        return read_state(path, with_optimizer=with_optimizer)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from exc
