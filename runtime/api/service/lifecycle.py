"""Sessions: opened by ``ServiceClient()``, kept alive by heartbeats, finished by ``close()`` or by
missed heartbeats; finishing one unloads its models from the engine."""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from .. import requests as rq
from ..futures import JsonResult, Result
from ..sessions import Session
from .core import ServiceCore, SessionGone

log = logging.getLogger(__name__)


class SessionOps(ServiceCore):
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
        """Finishes the session; its models' unloading is queued before this returns (see ``drain``)."""
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
