"""Sampling: sampling sessions (the weights a sampler reads) and ``asample``, batched across
requests that read the same fixed weights with the same options."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from ...engine.sampler import MAX_SAMPLES_PER_REQUEST
from ...errors import UnknownModelError, UserError
from .. import requests as rq
from .. import wire
from ..checkpoints import CheckpointRef, check_component
from ..futures import ProtoResult, Result
from ..sessions import Sampler, sampler_id_for
from .core import ServiceCore

Batch = list[tuple[rq.Sample, list[str]]]  # requests answered by one engine call, with their sequence ids


class SamplingOps(ServiceCore):
    def create_sampling_session(self, tenant: str, req: rq.CreateSamplingSession) -> dict[str, Any]:
        self.registry.session(tenant, req.session_id)
        sampler_id = check_component(sampler_id_for(req.session_id, req.sampling_session_seq_id),
                                     "sampler id")
        sampler = self._sampler_for(tenant, req.session_id, sampler_id, req.model_path, req.base_model)
        self.registry.add_sampler(sampler)
        return {"type": "create_sampling_session", "sampling_session_id": sampler_id}

    def get_sampler(self, tenant: str, sampler_id: str) -> dict[str, Any]:
        sampler = self.registry.sampler(tenant, sampler_id)
        return {"sampler_id": sampler.sampler_id, "base_model": sampler.base_model,
                "model_path": sampler.model_path}

    def sample(self, tenant: str, req: rq.Sample) -> dict[str, Any]:
        if not 1 <= req.num_samples <= MAX_SAMPLES_PER_REQUEST:
            raise UserError(f"num_samples must be between 1 and {MAX_SAMPLES_PER_REQUEST}; "
                            f"got {req.num_samples}")
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

        def answer(requests: Batch) -> list[Result]:
            return self._answer(tenant, sampler, req, requests)

        return self.submit(tenant, "sample", sampler.job, lambda: answer([(req, sequence_ids)])[0],
                           extra=extra, batch_key=self._batch_key(sampler, req), weight=req.num_samples,
                           payload=(req, sequence_ids),
                           run_batch=lambda ops: answer([op.payload for op in ops]))

    def _answer(self, tenant: str, sampler: Sampler, req: rq.Sample, requests: Batch) -> list[Result]:
        """One engine batch for ``requests`` (which share ``req``'s batch key); runs on the worker."""
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
        return Sampler(sampler_id, tenant, session_id, self.config.base_model, "base",
                       job=f"{session_id}:base")

    def _sample_source(self, sampler: Sampler) -> dict[str, Any]:
        """Engine arguments naming the weights a sampler reads (evaluated when the request runs)."""
        if sampler.kind == "base":
            return {}
        if sampler.kind in ("live", "snapshot"):
            model = self.registry.find_model(sampler.model_id or "")
            if model is not None and (sampler.kind == "live" or model.version == sampler.version):
                return {"model_id": model.model_id}  # the snapshot's weights are still the live ones
            if sampler.kind == "live":
                raise UnknownModelError(f"model {sampler.model_id!r} was unloaded; its inflight sampler has "
                                        "no weights")
        if sampler.directory is None or not sampler.directory.is_dir():
            raise UnknownModelError(
                f"sampler {sampler.sampler_id!r} expired (this server keeps the last "
                f"{self.config.snapshots_per_model} snapshots per model); make a new one with "
                "save_weights_and_get_sampling_client()"
            )
        return {"sampler_path": sampler.directory}

    @staticmethod
    def _check_sample_options(req: rq.Sample) -> None:
        options = (("topk_prompt_logprobs", req.topk_prompt_logprobs),
                   ("topk_sample_logprobs", req.topk_sample_logprobs),
                   ("target_prompt_logprobs", req.target_prompt_logprobs is not None),
                   ("prompt_alt_tokens_k", req.prompt_alt_tokens_k))
        unsupported = [name for name, used in options if used]
        if unsupported:
            raise UserError(f"{', '.join(unsupported)} is not supported by this server; leave it at its "
                            "default")
        if req.prompt_logprobs_last_n is not None and not (
            req.prompt_logprobs and 1 <= req.prompt_logprobs_last_n < req.prompt.length
        ):
            raise UserError("prompt_logprobs_last_n needs prompt_logprobs and must be between 1 and "
                            "len(prompt) - 1")
