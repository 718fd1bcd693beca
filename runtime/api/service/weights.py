"""Saving and loading weights: training checkpoints (``save_state``), sampler weights (named or
ephemeral snapshots), external PEFT exports, and loading a training checkpoint back."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timezone
from typing import Any

from ...errors import UserError
from .. import requests as rq
from ..checkpoints import CheckpointRef, check_component
from ..futures import JsonResult, Result
from ..sessions import Model, Sampler, model_id_for, sampler_id_for
from .core import ServiceCore


class WeightOps(ServiceCore):
    def save_weights(self, tenant: str, req: rq.SaveWeights) -> dict[str, Any]:
        """``save_state``: adapter + AdamW state + RNG, plus the same weights as a sampler adapter."""
        model = self.registry.model(tenant, req.model_id)
        name = check_component(req.path or _timestamp_name(), "checkpoint name")
        ref = CheckpointRef(model.model_id, "weights", name)

        def run() -> Result:
            self._check_new(tenant, ref, req.overwrite)
            self.engine.save_state(model.model_id, self.store.state_dir(tenant, ref))
            self.engine.save_weights_for_sampler(model.model_id, self.store.sampler_dir(tenant, ref))
            self.store.mark_complete(tenant, ref, user_metadata=req.user_metadata,
                                     ttl_seconds=req.ttl_seconds)
            return JsonResult({"type": "save_weights", "path": ref.tinker_path})

        return self.submit(tenant, "save_weights", model.model_id, run, seq_id=req.seq_id)

    def save_weights_for_sampler(self, tenant: str, req: rq.SaveWeightsForSampler) -> dict[str, Any]:
        """A named sampler checkpoint (``path``), or an ephemeral sampler of the model's weights."""
        model = self.registry.model(tenant, req.model_id)
        if req.path is not None:
            name = check_component(req.path, "checkpoint name")
            ref = CheckpointRef(model.model_id, "sampler_weights", name)

            def save_named() -> Result:
                self._save_adapter(tenant, model.model_id, ref, req.user_metadata, req.ttl_seconds)
                return JsonResult({"type": "save_weights_for_sampler", "path": ref.tinker_path})

            return self.submit(tenant, "save_weights_for_sampler", model.model_id, save_named,
                               seq_id=req.seq_id)
        return self._save_ephemeral_sampler(tenant, model, req)

    def _save_ephemeral_sampler(self, tenant: str, model: Model,
                                req: rq.SaveWeightsForSampler) -> dict[str, Any]:
        """``save_weights_and_get_sampling_client``: a ``snapshot`` of the weights now, or an
        ``inflight`` sampler that follows the live weights."""
        if req.sampling_session_seq_id is None:
            raise UserError("save_weights_for_sampler needs a path (a name) or a sampling_session_seq_id")
        if req.kind not in ("snapshot", "inflight"):
            raise UserError(f"sampling client kind {req.kind!r} is unknown; use 'snapshot' or 'inflight'")
        sampler_id = check_component(sampler_id_for(model.session_id, req.sampling_session_seq_id),
                                     "sampler id")

        def run() -> Result:
            sampler = Sampler(sampler_id, tenant, model.session_id, self.config.base_model, "live",
                              job=model.model_id, model_id=model.model_id)
            if req.kind == "snapshot":
                directory = self.store.snapshot_dir(tenant, model.model_id, sampler_id)
                self.engine.save_weights_for_sampler(model.model_id, directory)
                sampler = dataclasses.replace(sampler, kind="snapshot", version=model.version,
                                              directory=directory)
                self._keep_snapshot(model.model_id, sampler_id)
            self.registry.add_sampler(sampler)
            return JsonResult({"type": "save_weights_for_sampler", "sampling_session_id": sampler_id})

        return self.submit(tenant, "save_weights_for_sampler", model.model_id, run, seq_id=req.seq_id)

    def _keep_snapshot(self, model_id: str, sampler_id: str) -> None:
        """Keeps the model's newest snapshots; older ones' weights are deleted (their samplers expire)."""
        kept = self._snapshots[model_id]
        kept.append(sampler_id)
        while len(kept) > self.config.snapshots_per_model:
            stale = self.registry.samplers.get(kept.popleft())
            if stale is not None and stale.directory is not None:
                shutil.rmtree(stale.directory, ignore_errors=True)

    def save_weights_external(self, tenant: str, req: rq.SaveWeightsExternal) -> dict[str, Any]:
        """The model's adapter as a downloadable PEFT checkpoint (``get_external_weights_urls``)."""
        model = self.registry.model(tenant, req.model_id)

        def run() -> Result:
            # Checked here, not before queuing: a refused request still takes its seq_id turn, so
            # the client's next request does not wait for a gap.
            name = check_component(req.path, "checkpoint name")
            ref = CheckpointRef(model.model_id, "external_weights", name)
            if req.age_encryption_recipients:
                raise UserError("age_encryption_recipients is not supported by this server; save without it, "
                                "download the files with RestClient.get_external_weights_urls() and encrypt "
                                "them yourself, e.g. `age -r age1… -o adapter_model.safetensors.age "
                                "adapter_model.safetensors`")
            self._save_adapter(tenant, model.model_id, ref, None, req.ttl_seconds)
            size = sum(p.stat().st_size for p in self.store.adapter_files(tenant, ref).values())
            return JsonResult({"type": "save_weights_external", "path": ref.tinker_path, "size_bytes": size})

        return self.submit(tenant, "save_weights_external", model.model_id, run, seq_id=req.seq_id)

    def _save_adapter(self, tenant: str, model_id: str, ref: CheckpointRef,
                      user_metadata: dict[str, str] | None, ttl_seconds: int | None) -> None:
        """A new named checkpoint holding the model's adapter as a PEFT directory (sampler or external)."""
        self._check_new(tenant, ref, overwrite=False)
        self.engine.save_weights_for_sampler(model_id, self.store.sampler_dir(tenant, ref))
        self.store.mark_complete(tenant, ref, user_metadata=user_metadata, ttl_seconds=ttl_seconds)

    def _check_new(self, tenant: str, ref: CheckpointRef, overwrite: bool) -> None:
        if self.store.exists(tenant, ref) and not overwrite:
            raise UserError(f"checkpoint {ref.tinker_path} already exists; pick another name or pass "
                            "overwrite=True")

    def load_weights(self, tenant: str, req: rq.LoadWeights) -> dict[str, Any]:
        """Into an existing model (``model_id``), or a new one (``session_id`` + ``model_seq_id``)."""
        ref = CheckpointRef.parse(req.path)
        if ref.kind != "weights":
            raise UserError(f"{req.path} holds a PEFT adapter only (no training state); load a training "
                            "checkpoint (tinker://<model_id>/weights/<name>, written by save_state)")
        if req.model_id is None:
            return self._load_into_new_model(tenant, ref, req)
        model = self.registry.model(tenant, req.model_id)

        def run() -> Result:
            self.store.require(tenant, ref)
            self.engine.load_state(model.model_id, self.store.state_dir(tenant, ref),
                                   with_optimizer=req.optimizer)
            model.version += 1
            return JsonResult({"type": "load_weights", "path": req.path, "model_id": model.model_id})

        return self.submit(tenant, "load_weights", model.model_id, run, seq_id=req.seq_id)

    def _load_into_new_model(self, tenant: str, ref: CheckpointRef, req: rq.LoadWeights) -> dict[str, Any]:
        """``create_training_client_from_state``: a new model of the session, from the checkpoint."""
        if req.session_id is None or req.model_seq_id is None:
            raise UserError("load_weights needs a model_id, or a session_id and model_seq_id to create a "
                            "model")
        self.registry.session(tenant, req.session_id)
        self._check_base_model(req.base_model)
        self._check_optimizer(req.optimizer_config)
        model_id = check_component(model_id_for(req.session_id, req.model_seq_id), "model id")
        session_id = req.session_id

        def run() -> Result:
            self.store.require(tenant, ref)
            if self.registry.find_model(model_id) is not None:
                raise UserError(f"model {model_id!r} already exists")
            job = self.engine.load_state(model_id, self.store.state_dir(tenant, ref),
                                         with_optimizer=req.optimizer)
            model = Model(model_id, tenant, session_id, job.spec, self.config.base_model, req.user_metadata)
            self.registry.add_model(model)
            self.store.write_run(tenant, model_id, self._run_info(model, source=req.path))
            return JsonResult({"type": "load_weights", "path": req.path, "model_id": model_id})

        return self.submit(tenant, "load_weights", model_id, run, extra={"model_id": model_id})


def _timestamp_name() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
