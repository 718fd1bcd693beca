"""The state every area of the service shares, queuing onto the engine, and what the HTTP layer asks
of the server (readiness, metrics, client settings, tenants, futures)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from prometheus_client import generate_latest

from ...engine import Engine
from ...errors import UserError
from .. import requests as rq
from ..checkpoints import CheckpointStore
from ..config import ServerConfig
from ..external import UrlSigner
from ..futures import ErrorResult, FutureStore, Result
from ..metrics import ServerMetrics, outcome_of
from ..scheduler import Operation, Scheduler
from ..sessions import Model, Registry
from ..stability import StabilityRecords
from ..tenants import Tenants


class Overloaded(Exception):
    """Too much work queued; answered with HTTP 429 so the SDK backs off and retries."""


class SessionGone(Exception):
    """A finished session; answered with HTTP 410, which stops the SDK's heartbeat."""


class ServiceCore:
    """One engine (one base model, many LoRA jobs), its queues, futures, checkpoints and metrics."""

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

    # ============================================================ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Starts the engine's worker; ``loop`` is the event loop that long-polls the futures."""
        if loop is not None:
            self.futures.bind_loop(loop)
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()
        if self._op_trace is not None:
            self._op_trace.close()

    def ready(self) -> bool:
        """Whether the engine's worker runs (``/readyz``)."""
        return self.scheduler.alive

    def drain(self, job: str | None = None, timeout: float | None = None) -> bool:
        """Waits until every operation queued on ``job`` (or on any job) has run, been counted and
        been traced; ``False`` on timeout. A finished session's unloading is such an operation."""
        return self.scheduler.wait_idle(job, timeout)

    # ===================================================== for the HTTP layer
    @property
    def max_request_bytes(self) -> int:
        return self.config.max_request_bytes

    def tenant_of(self, api_key: str | None) -> str | None:
        """The tenant an API key belongs to; ``None`` for a missing, malformed or unknown key."""
        return self.tenants.resolve(api_key)

    def client_config(self) -> dict[str, Any]:
        """What the SDK asks at start-up: plain API keys (no JWT exchange), and forward_backward
        chunks that may arrive in parallel."""
        return {"pjwt_auth_enabled": False, "proto_compress_fwdbwd": False, "parallel_fwdbwd_chunks": True,
                "sample_use_retrieve_futures": False, "custom_loss_server_side": False,
                "sample_join_sampling_session": False,
                "fwdbwd_max_chunk_len": self.config.fwdbwd_max_chunk_len}

    def capabilities(self) -> dict[str, Any]:
        return {"supported_models": [{"model_name": self.config.base_model,
                                      "max_context_length": self.engine.max_length,
                                      "trainable": True, "sampleable": True}]}

    def metrics_exposition(self) -> bytes:
        """Every metric in the Prometheus text format (``/metrics``)."""
        return generate_latest(self.metrics.registry)

    def count_request(self, endpoint: str, status: int) -> None:
        """Counts one HTTP request by route template and status class."""
        self.metrics.requests.labels(endpoint, f"{status // 100}xx").inc()

    async def retrieve(self, tenant: str, request_id: str, hold: float | None = None) -> Result | None:
        """A future's result, waiting up to ``hold`` seconds (default: the configured poll hold);
        ``None`` if it is still pending then. An id this tenant was never issued, or one that
        expired, answers as a failed future with a user error."""
        record = self.futures.get(tenant, request_id)
        if record is None:
            return ErrorResult(f"unknown request_id {request_id!r}: it expired or was never issued to this "
                               "API key", "user")
        return await self.futures.wait(record, self.config.poll_hold_seconds if hold is None else hold)

    # ============================================================== queuing
    def submit(self, tenant: str, operation: str, job: str, run: Callable[[], Result], *,
               seq_id: int | None = None, extra: dict[str, Any] | None = None,
               **batching: Any) -> dict[str, Any]:
        """Queues ``run`` on ``job``; answers the future's ``request_id`` (plus ``extra``)."""
        if self.scheduler.depth() >= self.config.max_queued_operations:
            raise Overloaded(f"{self.config.max_queued_operations} operations are queued; retry later")
        record = self.futures.create(tenant, operation)
        self.scheduler.submit(Operation(job=job, name=operation, run=run, future=record,
                                        seq_id=seq_id or None, **batching))
        return {"request_id": record.request_id, **(extra or {})}

    def failed(self, tenant: str, operation: str, exc: Exception,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A future that has already failed: how request errors reach the SDK as RequestFailedError."""
        record = self.futures.create(tenant, operation)
        result = ErrorResult.from_exception(exc)
        self.futures.complete(record, result)
        self.metrics.operations.labels(operation, outcome_of(result)).inc()
        return {"request_id": record.request_id, **(extra or {})}

    def _operation_done(self, op: Operation, started: float, run: float, result: Result) -> None:
        """Runs on the worker before the operation's future completes (see the scheduler)."""
        self.metrics.operation_done(op, started - op.enqueued, run, result)
        if self._op_trace is not None:
            # seconds: the operation's engine time (a sampling batch's time split among its requests)
            self._op_trace.write(json.dumps({
                "job": op.job, "operation": op.name, "enqueued": round(op.enqueued, 6),
                "started": round(started, 6), "seconds": round(run, 6), "outcome": outcome_of(result),
            }) + "\n")

    # ======================================================= shared checks
    def _check_base_model(self, name: str | None) -> None:
        if not self.config.accepts_base_model(name):
            raise UserError(f"base model {name!r} is not served here; this server serves "
                            f"{self.config.base_model!r} (see get_server_capabilities)")

    @staticmethod
    def _check_optimizer(config: rq.OptimizerConfig | None) -> None:
        if config is not None and config.type != "adamw":
            raise UserError(f"optimizer {config.type!r} is not supported; this server runs AdamW")

    def _run_info(self, model: Model, source: str | None = None) -> dict[str, Any]:
        """``run.json`` of a training run: what the REST routes report about it."""
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
