"""The Tinker operations on top of the engine: validation, ownership, queuing, results.

Calls that change state return a future (``{"request_id"}``) and queue an operation on the
caller's job; the operation runs on the scheduler's worker thread and its result (or error) is
what ``retrieve_future`` hands back. Everything that can be checked before queuing is checked
before queuing; what fails then becomes a failed future with a user error, never an HTTP 400.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tinker import types

from ..engine import Engine, LoraSpec, PreparedBatch
from ..engine.errors import UnknownModelError, UserError
from ..engine.sampler import MAX_SAMPLES_PER_REQUEST
from . import requests as rq
from . import wire
from .checkpoints import CheckpointRef, CheckpointStore, check_component
from .config import ServerConfig
from .external import FileGrant, UrlSigner, is_safe_relative, iso
from .futures import ErrorResult, FutureStore, JsonResult, ProtoResult, Result
from .metrics import ServerMetrics, outcome_of
from .scheduler import Operation, Scheduler
from .sessions import Model, Registry, Sampler, Session, model_id_for, sampler_id_for
from .stability import StabilityRecords
from .tenants import Tenants, is_tenant_name

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """Too much work queued; answered with HTTP 429 so the SDK backs off and retries."""


class SessionGone(Exception):
    """A finished session; answered with HTTP 410, which stops the SDK's heartbeat."""


class TinkerService:
    """Serves the Tinker API for one engine (one base model, many LoRA jobs)."""

    def __init__(self, engine: Engine, config: ServerConfig):
        self.engine = engine
        self.config = config
        self.tenants = Tenants(config.api_keys)
        self.registry = Registry()
        self.store = CheckpointStore(config.checkpoint_dir)
        self.futures = FutureStore()
        self.signer = UrlSigner(config.url_signing_secret)
        self.scheduler = Scheduler(self.futures.complete, gap_timeout=config.seq_gap_timeout_seconds,
                                   on_done=self._operation_done, max_batch=config.max_sample_batch)
        self.metrics = ServerMetrics(lambda: engine.busy_seconds, self.scheduler.depths,
                                     self.registry.live_models, self.registry.live_sessions)
        self.arch = getattr(getattr(engine.peft.get_base_model(), "config", None), "model_type", None)
        self._snapshots: dict[str, deque[str]] = defaultdict(deque)  # model_id -> snapshot sampler ids
        self.stability = StabilityRecords()  # stable_reinforce: what record_stability_info samples drew
        # Written by the worker thread only, one line per operation, flushed per line.
        self._op_trace = open(config.op_trace, "a", buffering=1) if config.op_trace else None  # noqa: SIM115

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()
        if self._op_trace is not None:
            self._op_trace.close()

    # ============================================================== helpers
    def submit(self, tenant: str, operation: str, job: str, run: Callable[[], Result], *,
               seq_id: int | None = None, extra: dict[str, Any] | None = None, **batching: Any) -> dict[str, Any]:
        if self.scheduler.depth() >= self.config.max_queued_operations:
            raise Overloaded(f"{self.config.max_queued_operations} operations are queued; retry later")
        record = self.futures.create(tenant, operation)
        self.scheduler.submit(Operation(job=job, name=operation, run=run, future=record, seq_id=seq_id or None,
                                        **batching))
        return {"request_id": record.request_id, **(extra or {})}

    def failed(self, tenant: str, operation: str, exc: Exception, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A future that has already failed: how request errors reach the SDK as RequestFailedError."""
        record = self.futures.create(tenant, operation)
        result = ErrorResult.from_exception(exc)
        self.futures.complete(record, result)
        self.metrics.operations.labels(operation, outcome_of(result)).inc()
        return {"request_id": record.request_id, **(extra or {})}

    def _operation_done(self, op: Operation, wait: float, run: float, result: Result) -> None:
        self.metrics.operation_done(op, wait, run, result)
        if self._op_trace is not None:
            # seconds: the operation's engine time (a sampling batch's time split among its requests)
            started = op.enqueued + wait
            self._op_trace.write(json.dumps({"job": op.job, "operation": op.name, "enqueued": round(op.enqueued, 6),
                                             "started": round(started, 6), "seconds": round(run, 6),
                                             "outcome": outcome_of(result)}) + "\n")

    # ============================================================= sessions
    def create_session(self, tenant: str, req: rq.CreateSession) -> dict[str, Any]:
        self.reap_sessions()
        session = self.registry.create_session(tenant, req.tags, req.user_metadata)
        log.info("tenant %s opened session %s", tenant, session.session_id)
        return {"type": "create_session", "session_id": session.session_id}

    def heartbeat(self, tenant: str, req: rq.SessionRef) -> dict[str, Any]:
        session = self.registry.session(tenant, req.session_id, live=False)
        if session.finished:
            raise SessionGone(f"session {req.session_id} is finished")
        session.last_heartbeat = time.monotonic()
        self.reap_sessions()
        return {"type": "session_heartbeat"}

    def finish_session(self, tenant: str, session_id: str) -> dict[str, Any]:
        session = self.registry.session(tenant, session_id, live=False)
        if not session.finished:
            self._finish(session)
        return {}

    def reap_sessions(self) -> None:
        """Finishes sessions whose client stopped heartbeating long ago."""
        for session in self.registry.expired_sessions(self.config.session_timeout_seconds):
            log.warning("session %s missed heartbeats for %.0f s; finishing it", session.session_id,
                        self.config.session_timeout_seconds)
            self._finish(session)

    def _finish(self, session: Session) -> None:
        session.finished = True
        for sampler_id in list(session.samplers):
            self.registry.remove_sampler(sampler_id)
        # Unloading is queued on each job, so the job's pending operations run first.
        for model_id in list(session.models):
            self.submit(session.tenant, "unload_model", model_id, lambda m=model_id: self._unload(m))

    def _unload(self, model_id: str) -> Result:
        model = self.registry.find_model(model_id)
        self.engine.delete_model(model_id)
        self.registry.remove_model(model_id)
        if model is not None:
            shutil.rmtree(self.store.run_dir(model.tenant, model_id) / "snapshots", ignore_errors=True)
        self._snapshots.pop(model_id, None)
        self.metrics.forget_job(model_id)
        self.scheduler.forget(model_id)
        return JsonResult({})

    # =============================================================== models
    def create_model(self, tenant: str, req: rq.CreateModel) -> dict[str, Any]:
        self.registry.session(tenant, req.session_id)
        self._check_base_model(req.base_model)
        self._check_optimizer(req.optimizer_config)
        model_id = check_component(model_id_for(req.session_id, req.model_seq_id), "model id")
        lora = req.lora_config or rq.LoraConfig()
        spec = LoraSpec(rank=lora.rank, seed=lora.seed, train_attn=lora.train_attn, train_mlp=lora.train_mlp,
                        train_unembed=lora.train_unembed)
        spec.validate()

        def run() -> Result:
            self.engine.create_model(model_id, spec)
            model = Model(model_id, tenant, req.session_id, spec, self.config.base_model, req.user_metadata)
            self.registry.add_model(model)
            self.store.write_run(tenant, model_id, self._run_info(model))
            return JsonResult({"type": "create_model", "model_id": model_id})

        return self.submit(tenant, "create_model", model_id, run, extra={"model_id": model_id})

    def get_info(self, tenant: str, req: rq.ModelRef) -> dict[str, Any]:
        model = self.registry.model(tenant, req.model_id)
        return {
            "type": "get_info",
            "model_id": model.model_id,
            # The tokenizer id is what the SDK's get_tokenizer() loads: the model's own directory.
            "model_data": {"arch": self.arch, "model_name": self.config.base_model, "tokenizer_id": self.config.base_model},
            "model_name": self.config.base_model,
            "is_lora": True,
            "lora_rank": model.spec.rank,
            "optimizer_config": {"type": "adamw"},
        }

    def capabilities(self) -> dict[str, Any]:
        return {"supported_models": [{"model_name": self.config.base_model, "max_context_length": self.engine.max_length,
                                      "trainable": True, "sampleable": True}]}

    # ============================================================= training
    def forward_backward(self, tenant: str, body: bytes) -> dict[str, Any]:
        """Parses the protobuf request; data errors still take the request's seq_id turn."""
        try:
            header, message = wire.parse_forward_backward(body)
            model = self.registry.model(tenant, header.model_id)
        except UserError as exc:
            return self.failed(tenant, "forward_backward", exc)
        operation = "forward" if header.forward_only else "forward_backward"
        # Checked and padded here, on the request's thread, while the engine computes other jobs'
        # operations: the engine's turn then holds only the compute. A bad batch still takes its
        # seq_id turn and fails then, so the job's later requests run in order.
        try:
            data = wire.datums(message)
            if header.loss_fn == "stable_reinforce":
                # the sequences' records exist: the client learnt their ids from completed samples
                self._attach_sampling_records(tenant, model.session_id, data)
            prepared: PreparedBatch | UserError = self.engine.prepare(data, header.loss_fn, wire.loss_config(message))
        except UserError as exc:
            prepared = exc

        def run() -> Result:
            if isinstance(prepared, UserError):
                raise prepared
            out = self.engine.run_prepared(header.model_id, prepared, forward_only=header.forward_only)
            if not header.forward_only:
                self.metrics.trained(header.model_id, sum(prepared.batch.lengths))
            return ProtoResult(wire.encode_forward_backward_output(out))

        return self.submit(tenant, operation, header.model_id, run, seq_id=header.seq_id)

    def _attach_sampling_records(self, tenant: str, session_id: str, data: list[types.Datum]) -> None:
        """``stable_reinforce`` reads the server's own sampling record, never a client-sent copy."""
        for index, datum in enumerate(data):
            if "target_tokens" not in datum.loss_fn_inputs:
                continue  # the loss's own input check names what is missing
            logprobs, mask = self.stability.resolve(tenant, session_id, datum, f"data[{index}]")
            datum.loss_fn_inputs["sampler_logprobs"] = types.TensorData.from_numpy(logprobs)
            datum.loss_fn_inputs["sampled_mask"] = types.TensorData.from_numpy(mask)

    def optim_step(self, tenant: str, req: rq.OptimStep) -> dict[str, Any]:
        model = self.registry.model(tenant, req.model_id)
        if req.adam_params is None and req.optimizer_params is not None:
            raise UserError(f"optimizer {req.optimizer_params.get('type')!r} is not supported; this server runs AdamW "
                            "(send AdamParams)")
        params = req.adam_params or types.AdamParams()

        def run() -> Result:
            metrics = self.engine.optim_step(model.model_id, params)
            model.version += 1
            return JsonResult({"type": "optim_step", "metrics": metrics})

        return self.submit(tenant, "optim_step", model.model_id, run, seq_id=req.seq_id)

    # ========================================================== checkpoints
    def save_weights(self, tenant: str, req: rq.SaveWeights) -> dict[str, Any]:
        """``save_state``: adapter + AdamW state + RNG, plus the same weights as a sampler adapter."""
        model = self.registry.model(tenant, req.model_id)
        ref = CheckpointRef(model.model_id, "weights", check_component(req.path or _timestamp_name(), "checkpoint name"))

        def run() -> Result:
            self._check_new(tenant, ref, req.overwrite)
            self.engine.save_state(model.model_id, self.store.state_dir(tenant, ref))
            self.engine.save_weights_for_sampler(model.model_id, self.store.sampler_dir(tenant, ref))
            self.store.mark_complete(tenant, ref, user_metadata=req.user_metadata, ttl_seconds=req.ttl_seconds)
            return JsonResult({"type": "save_weights", "path": ref.tinker_path})

        return self.submit(tenant, "save_weights", model.model_id, run, seq_id=req.seq_id)

    def save_weights_for_sampler(self, tenant: str, req: rq.SaveWeightsForSampler) -> dict[str, Any]:
        model = self.registry.model(tenant, req.model_id)
        if req.path is not None:
            ref = CheckpointRef(model.model_id, "sampler_weights", check_component(req.path, "checkpoint name"))

            def save_named() -> Result:
                self._save_adapter(tenant, model.model_id, ref, req.user_metadata, req.ttl_seconds)
                return JsonResult({"type": "save_weights_for_sampler", "path": ref.tinker_path})

            return self.submit(tenant, "save_weights_for_sampler", model.model_id, save_named, seq_id=req.seq_id)

        if req.sampling_session_seq_id is None:
            raise UserError("save_weights_for_sampler needs a path (a name) or a sampling_session_seq_id")
        if req.kind not in ("snapshot", "inflight"):
            raise UserError(f"sampling client kind {req.kind!r} is unknown; use 'snapshot' or 'inflight'")
        sampler_id = check_component(sampler_id_for(model.session_id, req.sampling_session_seq_id), "sampler id")

        def save_ephemeral() -> Result:
            sampler = Sampler(sampler_id, tenant, model.session_id, self.config.base_model, "live", job=model.model_id,
                              model_id=model.model_id)
            if req.kind == "snapshot":
                directory = self.store.snapshot_dir(tenant, model.model_id, sampler_id)
                self.engine.save_weights_for_sampler(model.model_id, directory)
                sampler = dataclasses.replace(sampler, kind="snapshot", version=model.version, directory=directory)
                self._keep_snapshot(model.model_id, sampler_id)
            self.registry.add_sampler(sampler)
            return JsonResult({"type": "save_weights_for_sampler", "sampling_session_id": sampler_id})

        return self.submit(tenant, "save_weights_for_sampler", model.model_id, save_ephemeral, seq_id=req.seq_id)

    def save_weights_external(self, tenant: str, req: rq.SaveWeightsExternal) -> dict[str, Any]:
        """The model's adapter as a downloadable PEFT checkpoint (``get_external_weights_urls``)."""
        model = self.registry.model(tenant, req.model_id)

        def run() -> Result:
            # Checked here, not before queuing: a refused request still takes its seq_id turn, so
            # the client's next request does not wait for a gap.
            ref = CheckpointRef(model.model_id, "external_weights", check_component(req.path, "checkpoint name"))
            if req.age_encryption_recipients:
                raise UserError("age_encryption_recipients is not supported by this server; save without it, "
                                "download the files with RestClient.get_external_weights_urls() and encrypt them "
                                "yourself, e.g. `age -r age1… -o adapter_model.safetensors.age "
                                "adapter_model.safetensors`")
            self._save_adapter(tenant, model.model_id, ref, None, req.ttl_seconds)
            size = sum(p.stat().st_size for p in self.store.adapter_files(tenant, ref).values())
            return JsonResult({"type": "save_weights_external", "path": ref.tinker_path, "size_bytes": size})

        return self.submit(tenant, "save_weights_external", model.model_id, run, seq_id=req.seq_id)

    def _save_adapter(self, tenant: str, model_id: str, ref: CheckpointRef, user_metadata: dict[str, str] | None,
                      ttl_seconds: int | None) -> None:
        """A new named checkpoint holding the model's adapter as a PEFT directory (sampler or external)."""
        self._check_new(tenant, ref, overwrite=False)
        self.engine.save_weights_for_sampler(model_id, self.store.sampler_dir(tenant, ref))
        self.store.mark_complete(tenant, ref, user_metadata=user_metadata, ttl_seconds=ttl_seconds)

    def load_weights(self, tenant: str, req: rq.LoadWeights) -> dict[str, Any]:
        """Into an existing model (``model_id``), or a new one (``session_id`` + ``model_seq_id``)."""
        ref = CheckpointRef.parse(req.path)
        if ref.kind != "weights":
            raise UserError(f"{req.path} holds a PEFT adapter only (no training state); load a training checkpoint "
                            "(tinker://<model_id>/weights/<name>, written by save_state)")
        if req.model_id is not None:
            model = self.registry.model(tenant, req.model_id)

            def load_into() -> Result:
                self.store.require(tenant, ref)
                self.engine.load_state(model.model_id, self.store.state_dir(tenant, ref), with_optimizer=req.optimizer)
                model.version += 1
                return JsonResult({"type": "load_weights", "path": req.path, "model_id": model.model_id})

            return self.submit(tenant, "load_weights", model.model_id, load_into, seq_id=req.seq_id)

        if req.session_id is None or req.model_seq_id is None:
            raise UserError("load_weights needs a model_id, or a session_id and model_seq_id to create a model")
        self.registry.session(tenant, req.session_id)
        self._check_base_model(req.base_model)
        self._check_optimizer(req.optimizer_config)
        model_id = check_component(model_id_for(req.session_id, req.model_seq_id), "model id")

        def load_new() -> Result:
            self.store.require(tenant, ref)
            if self.registry.find_model(model_id) is not None:
                raise UserError(f"model {model_id!r} already exists")
            job = self.engine.load_state(model_id, self.store.state_dir(tenant, ref), with_optimizer=req.optimizer)
            model = Model(model_id, tenant, req.session_id, job.spec, self.config.base_model, req.user_metadata)
            self.registry.add_model(model)
            self.store.write_run(tenant, model_id, self._run_info(model, source=req.path))
            return JsonResult({"type": "load_weights", "path": req.path, "model_id": model_id})

        return self.submit(tenant, "load_weights", model_id, load_new, extra={"model_id": model_id})

    # ============================================================= sampling
    def create_sampling_session(self, tenant: str, req: rq.CreateSamplingSession) -> dict[str, Any]:
        self.registry.session(tenant, req.session_id)
        sampler_id = check_component(sampler_id_for(req.session_id, req.sampling_session_seq_id), "sampler id")
        sampler = self._sampler_for(tenant, req.session_id, sampler_id, req.model_path, req.base_model)
        self.registry.add_sampler(sampler)
        return {"type": "create_sampling_session", "sampling_session_id": sampler_id}

    def get_sampler(self, tenant: str, sampler_id: str) -> dict[str, Any]:
        sampler = self.registry.sampler(tenant, sampler_id)
        return {"sampler_id": sampler.sampler_id, "base_model": sampler.base_model, "model_path": sampler.model_path}

    def sample(self, tenant: str, req: rq.Sample) -> dict[str, Any]:
        if not 1 <= req.num_samples <= MAX_SAMPLES_PER_REQUEST:
            raise UserError(f"num_samples must be between 1 and {MAX_SAMPLES_PER_REQUEST}; got {req.num_samples}")
        sequence_ids = [uuid.uuid4().hex for _ in range(req.num_samples)]
        extra = {"sample_sequence_ids": sequence_ids}
        try:
            self._check_sample_options(req)
            if req.sampling_session_id is not None:
                sampler = self.registry.sampler(tenant, req.sampling_session_id)
            else:
                session_key = f"{tenant}:adhoc"
                sampler = self._sampler_for(tenant, session_key, session_key, req.model_path, req.base_model)
        except UserError as exc:
            return self.failed(tenant, "sample", exc, extra)

        def answer(requests: list[tuple[rq.Sample, list[str]]]) -> list[Result]:
            responses = self.engine.sample_batch([r.prompt for r, _ in requests], req.num_samples,
                                                 req.sampling_params, prompt_logprobs=bool(req.prompt_logprobs),
                                                 **self._sample_source(sampler))
            results: list[Result] = []
            for (request, ids), response in zip(requests, responses, strict=True):
                self.metrics.sampled(sampler.job, sum(len(s.tokens) for s in response.sequences))
                if request.record_stability_info:
                    prompt = np.asarray(request.prompt.to_ints(), dtype=np.int32)  # one copy for all samples
                    for sequence_id, sequence in zip(ids, response.sequences, strict=True):
                        self.stability.record(tenant, sampler.session_id, sequence_id, prompt, sequence.tokens,
                                              sequence.logprobs or [])
                results.append(ProtoResult(wire.encode_sample_response(response, request.prompt_logprobs_last_n)))
            return results

        return self.submit(tenant, "sample", sampler.job, lambda: answer([(req, sequence_ids)])[0], extra=extra,
                           batch_key=self._batch_key(sampler, req), weight=req.num_samples,
                           payload=(req, sequence_ids), run_batch=lambda ops: answer([op.payload for op in ops]))

    @staticmethod
    def _batch_key(sampler: Sampler, req: rq.Sample) -> tuple | None:
        """Requests with equal keys read the same fixed weights with the same options, so one engine
        batch answers them as one by one would, up to float rounding from left padding (a greedy
        token can flip only at a near-tie; unseeded sampling draws from the same distribution).
        Not batched: live samplers (a training step may sit between two requests), seeded sampling
        (a request's seed fixes its own draws) and scoring (``compute_logprobs``: reference
        log-probabilities feed training and must not depend on what else was queued)."""
        params = req.sampling_params
        seeded = params.seed is not None and (params.temperature or 0.0) > 0.0
        if sampler.kind == "live" or seeded or req.prompt_logprobs:
            return None
        return (sampler.kind, str(sampler.directory), sampler.model_id, sampler.version, req.num_samples,
                params.model_dump_json())

    def _sampler_for(self, tenant: str, session_id: str, sampler_id: str, model_path: str | None,
                     base_model: str | None) -> Sampler:
        if model_path:
            ref = CheckpointRef.parse(model_path)
            self.store.require(tenant, ref)
            return Sampler(sampler_id, tenant, session_id, self.config.base_model, "path", job=ref.model_id,
                           model_path=model_path, directory=self.store.sampler_dir(tenant, ref))
        self._check_base_model(base_model)
        return Sampler(sampler_id, tenant, session_id, self.config.base_model, "base", job=f"{session_id}:base")

    def _sample_source(self, sampler: Sampler) -> dict[str, Any]:
        """Engine arguments naming the weights a sampler reads (evaluated when the request runs)."""
        if sampler.kind == "base":
            return {}
        if sampler.kind in ("live", "snapshot"):
            model = self.registry.find_model(sampler.model_id or "")
            if model is not None and (sampler.kind == "live" or model.version == sampler.version):
                return {"model_id": model.model_id}  # the snapshot's weights are still the live ones
            if sampler.kind == "live":
                raise UnknownModelError(f"model {sampler.model_id!r} was unloaded; its inflight sampler has no weights")
        if sampler.directory is None or not sampler.directory.is_dir():
            raise UnknownModelError(
                f"sampler {sampler.sampler_id!r} expired (this server keeps the last {self.config.snapshots_per_model} "
                "snapshots per model); make a new one with save_weights_and_get_sampling_client()"
            )
        return {"sampler_path": sampler.directory}

    def _check_sample_options(self, req: rq.Sample) -> None:
        unsupported = [name for name, used in (("topk_prompt_logprobs", req.topk_prompt_logprobs),
                                               ("topk_sample_logprobs", req.topk_sample_logprobs),
                                               ("target_prompt_logprobs", req.target_prompt_logprobs is not None),
                                               ("prompt_alt_tokens_k", req.prompt_alt_tokens_k)) if used]
        if unsupported:
            raise UserError(f"{', '.join(unsupported)} is not supported by this server; leave it at its default")
        if req.prompt_logprobs_last_n is not None and not (
            req.prompt_logprobs and 1 <= req.prompt_logprobs_last_n < req.prompt.length
        ):
            raise UserError("prompt_logprobs_last_n needs prompt_logprobs and must be between 1 and len(prompt) - 1")

    def _keep_snapshot(self, model_id: str, sampler_id: str) -> None:
        kept = self._snapshots[model_id]
        kept.append(sampler_id)
        while len(kept) > self.config.snapshots_per_model:
            stale = self.registry.samplers.get(kept.popleft())
            if stale is not None and stale.directory is not None:
                shutil.rmtree(stale.directory, ignore_errors=True)

    # ====================================================== rest: checkpoints
    def training_run(self, tenant: str, model_id: str) -> dict[str, Any]:
        info = self.store.read_run(tenant, check_component(model_id, "model id"))
        if info is None:
            raise UnknownModelError(f"no training run {model_id!r}")
        checkpoints = self.store.list(tenant, model_id)
        live = self.registry.find_model(model_id)
        last = live.last_request.isoformat() if live is not None and live.tenant == tenant else info["created"]
        return {
            "training_run_id": model_id,
            "base_model": info["base_model"],
            "model_owner": tenant,
            "is_lora": True,
            "corrupted": False,
            "lora_rank": info["lora"]["rank"],
            "last_request_time": last,
            "last_checkpoint": next((c for c in checkpoints if c["checkpoint_type"] == "training"), None),
            "last_sampler_checkpoint": next((c for c in checkpoints if c["checkpoint_type"] == "sampler"), None),
            "user_metadata": info.get("user_metadata"),
        }

    def training_runs(self, tenant: str, limit: int, offset: int) -> dict[str, Any]:
        ids = self.store.models(tenant)
        runs = [self.training_run(tenant, model_id) for model_id in ids[offset: offset + limit]]
        return {"training_runs": runs, "cursor": {"offset": offset, "limit": limit, "total_count": len(ids)}}

    def checkpoints(self, tenant: str, model_id: str | None, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        if model_id is not None and self.store.read_run(tenant, check_component(model_id, "model id")) is None:
            raise UnknownModelError(f"no training run {model_id!r}")
        found = self.store.list(tenant, model_id)
        if limit is None:
            return {"checkpoints": found}
        return {"checkpoints": found[offset: offset + limit],
                "cursor": {"offset": offset, "limit": limit, "total_count": len(found)}}

    def delete_checkpoint(self, tenant: str, model_id: str, checkpoint_id: str) -> None:
        self.store.delete(tenant, CheckpointRef.parse(f"tinker://{model_id}/{checkpoint_id}"))

    def external_weights_urls(self, tenant: str, model_id: str, checkpoint_id: str, base_url: str) -> dict[str, Any]:
        """One signed download URL per file of an ``external_weights`` checkpoint of this tenant."""
        ref = CheckpointRef.parse(f"tinker://{model_id}/{checkpoint_id}")
        if ref.kind != "external_weights":
            raise UserError(f"{ref.tinker_path} is not an external weights checkpoint; download URLs exist only for "
                            "tinker://<model_id>/external_weights/<name>, written by save_weights_external()")
        self.store.require(tenant, ref)  # another tenant's checkpoint is simply not found
        created = (self.store.read_meta(tenant, ref) or {}).get("created", "")  # "" (deleted meanwhile) never serves
        expires = int(time.time() + self.config.external_url_ttl_seconds)
        urls = {rel: self.signer.url(base_url, FileGrant(tenant, ref.model_id, ref.name, rel, created, expires))
                for rel in self.store.adapter_files(tenant, ref)}
        return {"urls": urls, "expires": iso(expires)}

    def external_weights_file(self, grant: FileGrant, signature: str | None) -> Path:
        """The file a signed URL names; :class:`Forbidden` unless the URL is intact and current."""
        self.signer.verify(grant, signature, time.time())
        gone = UnknownModelError(f"{grant.tinker_path} has no file {grant.path!r}: the checkpoint was deleted or "
                                 "replaced, or the file never existed")
        # Signed URLs only name the server's own files; these checks keep it so even if the key leaked.
        if not is_tenant_name(grant.tenant) or not is_safe_relative(grant.path):
            raise gone
        ref = CheckpointRef(check_component(grant.model_id, "model id"), "external_weights",
                            check_component(grant.name, "checkpoint name"))
        meta = self.store.read_meta(grant.tenant, ref)
        if meta is None or meta["created"] != grant.created:
            raise gone
        root = self.store.sampler_dir(grant.tenant, ref).resolve()
        path = (root / grant.path).resolve()
        if not path.is_file() or not path.is_relative_to(root):  # symlinks resolve outside: refused too
            raise gone
        return path

    def weights_info(self, tenant: str, req: rq.WeightsInfo) -> dict[str, Any]:
        ref = CheckpointRef.parse(req.tinker_path)
        self.store.require(tenant, ref)
        info = self.store.read_run(tenant, ref.model_id) or {}
        lora = info.get("lora", {})
        state = self.store.state_dir(tenant, ref) / "kubetune_state.json"
        if state.is_file():  # the checkpoint's own record wins over the run's
            header = json.loads(state.read_text())
            lora, info = header["lora"], {"base_model": header["base_model"]}
        return {"base_model": info.get("base_model", self.config.base_model), "is_lora": True,
                "lora_rank": lora.get("rank"), "train_unembed": lora.get("train_unembed"),
                "train_mlp": lora.get("train_mlp"), "train_attn": lora.get("train_attn")}

    # ============================================================ internals
    def _check_base_model(self, name: str | None) -> None:
        if not self.config.accepts_base_model(name):
            raise UserError(f"base model {name!r} is not served here; this server serves {self.config.base_model!r} "
                            "(see get_server_capabilities)")

    @staticmethod
    def _check_optimizer(config: rq.OptimizerConfig | None) -> None:
        if config is not None and config.type != "adamw":
            raise UserError(f"optimizer {config.type!r} is not supported; this server runs AdamW")

    def _check_new(self, tenant: str, ref: CheckpointRef, overwrite: bool) -> None:
        if self.store.exists(tenant, ref) and not overwrite:
            raise UserError(f"checkpoint {ref.tinker_path} already exists; pick another name or pass overwrite=True")

    def _run_info(self, model: Model, source: str | None = None) -> dict[str, Any]:
        return {
            "training_run_id": model.model_id,
            "base_model": model.base_model,
            "owner": model.tenant,
            "session_id": model.session_id,
            "lora": dataclasses.asdict(model.spec),
            "created": datetime.now(timezone.utc).isoformat(),
            "user_metadata": model.user_metadata,
            "loaded_from": source,
        }


def _timestamp_name() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
