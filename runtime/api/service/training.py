"""Training runs: creating a model (a LoRA job on the engine), forward_backward and optim_step."""

from __future__ import annotations

from typing import Any

from tinker import types

from ...engine import LoraSpec, PreparedBatch
from ...errors import UserError
from .. import requests as rq
from .. import wire
from ..checkpoints import check_component
from ..futures import JsonResult, ProtoResult, Result
from ..sessions import Model, model_id_for
from .core import ServiceCore


class TrainingOps(ServiceCore):
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
        base = self.config.base_model
        return {
            "type": "get_info",
            "model_id": model.model_id,
            # The tokenizer id is what the SDK's get_tokenizer() loads: the model's own directory.
            "model_data": {"arch": self.arch, "model_name": base, "tokenizer_id": base},
            "model_name": base,
            "is_lora": True,
            "lora_rank": model.spec.rank,
            "optimizer_config": {"type": "adamw"},
        }

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
            prepared: PreparedBatch | UserError = self.engine.prepare(data, header.loss_fn,
                                                                      wire.loss_config(message))
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
            raise UserError(f"optimizer {req.optimizer_params.get('type')!r} is not supported; this server "
                            "runs AdamW (send AdamParams)")
        params = req.adam_params or types.AdamParams()

        def run() -> Result:
            metrics = self.engine.optim_step(model.model_id, params)
            model.version += 1
            return JsonResult({"type": "optim_step", "metrics": metrics})

        return self.submit(tenant, "optim_step", model.model_id, run, seq_id=req.seq_id)
