"""Sessions, the training runs (models) they created, and their samplers; all owned by one tenant.

Lookups take the caller's tenant and treat another tenant's object exactly like a missing one, so
no call can reveal, sample, train, load or delete what someone else owns.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..engine.adapters import LoraSpec
from ..errors import UnknownModelError, UserError


@dataclass
class Session:
    session_id: str
    tenant: str
    tags: list[str] = field(default_factory=list)
    user_metadata: dict[str, Any] | None = None
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    last_heartbeat: float = field(default_factory=time.monotonic)
    finished: bool = False
    models: set[str] = field(default_factory=set)
    samplers: set[str] = field(default_factory=set)


@dataclass
class Model:
    """A live training run: one LoRA job on the engine."""

    model_id: str
    tenant: str
    session_id: str
    spec: LoraSpec
    base_model: str
    user_metadata: dict[str, Any] | None = None
    version: int = 0  # bumped by every weight change (optim_step, load); snapshot samplers compare it
    last_request: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


SamplerKind = Literal["base", "live", "snapshot", "path"]


@dataclass
class Sampler:
    """Where a sampling session's weights come from.

    ``base``: the base model. ``live``: the model's current weights (``inflight`` samplers).
    ``snapshot``: the model's weights when the sampler was made; served from the live job while its
    ``version`` is unchanged, else from the snapshot written to ``directory``. ``path``: saved
    sampler weights in ``directory``.
    """

    sampler_id: str
    tenant: str
    session_id: str
    base_model: str
    kind: SamplerKind
    job: str  # the fairness key its sampling requests are queued under
    model_id: str | None = None
    model_path: str | None = None
    version: int | None = None
    directory: Path | None = None


def model_id_for(session_id: str, model_seq_id: int) -> str:
    """The id the SDK expects for a session's n-th training client (it computes it itself on load)."""
    return f"{session_id}:train:{model_seq_id}"


def sampler_id_for(session_id: str, sampling_session_seq_id: int) -> str:
    return f"{session_id}:sample:{sampling_session_seq_id}"


class Registry:
    """Thread-safe maps of sessions, models and samplers (the HTTP loop reads, the worker writes)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, Model] = {}
        self.samplers: dict[str, Sampler] = {}

    # -------------------------------------------------------------- sessions
    def create_session(self, tenant: str, tags: list[str], user_metadata: dict[str, Any] | None) -> Session:
        session = Session(session_id=uuid.uuid4().hex, tenant=tenant, tags=tags, user_metadata=user_metadata)
        with self._lock:
            self.sessions[session.session_id] = session
        return session

    def session(self, tenant: str, session_id: str, *, live: bool = True) -> Session:
        with self._lock:
            session = self.sessions.get(session_id)
        if session is None or session.tenant != tenant:
            raise UnknownModelError(f"no session {session_id!r}; create one with ServiceClient()")
        if live and session.finished:
            raise UserError(f"session {session_id!r} is finished; create a new ServiceClient")
        return session

    def expired_sessions(self, timeout: float) -> list[Session]:
        now = time.monotonic()
        with self._lock:
            return [s for s in self.sessions.values() if not s.finished and now - s.last_heartbeat > timeout]

    # ---------------------------------------------------------------- models
    def add_model(self, model: Model) -> None:
        with self._lock:
            if model.model_id in self.models:
                raise UserError(f"model {model.model_id!r} already exists")
            self.models[model.model_id] = model
            self.sessions[model.session_id].models.add(model.model_id)

    def model(self, tenant: str, model_id: str) -> Model:
        with self._lock:
            model = self.models.get(model_id)
        if model is None or model.tenant != tenant:
            raise UnknownModelError(f"no model {model_id!r} is loaded for you; create it or load a "
                                    "checkpoint")
        model.last_request = datetime.now(timezone.utc)
        return model

    def find_model(self, model_id: str) -> Model | None:
        with self._lock:
            return self.models.get(model_id)

    def remove_model(self, model_id: str) -> None:
        with self._lock:
            model = self.models.pop(model_id, None)
            if model is not None and model.session_id in self.sessions:
                self.sessions[model.session_id].models.discard(model_id)

    # -------------------------------------------------------------- samplers
    def add_sampler(self, sampler: Sampler) -> None:
        with self._lock:
            self.samplers[sampler.sampler_id] = sampler
            self.sessions[sampler.session_id].samplers.add(sampler.sampler_id)

    def sampler(self, tenant: str, sampler_id: str) -> Sampler:
        with self._lock:
            sampler = self.samplers.get(sampler_id)
        if sampler is None or sampler.tenant != tenant:
            raise UnknownModelError(f"no sampler {sampler_id!r}; create one with create_sampling_client")
        return sampler

    def remove_sampler(self, sampler_id: str) -> None:
        with self._lock:
            sampler = self.samplers.pop(sampler_id, None)
            if sampler is not None and sampler.session_id in self.sessions:
                self.sessions[sampler.session_id].samplers.discard(sampler_id)

    def live_models(self) -> int:
        with self._lock:
            return len(self.models)

    def live_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self.sessions.values() if not s.finished)
