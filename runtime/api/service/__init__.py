"""The Tinker operations on top of the engine: validation, ownership, queuing, results.

Calls that change state return a future (``{"request_id"}``) and queue an operation on the
caller's job; the operation runs on the scheduler's worker thread and its result (or error) is
what ``retrieve_future`` hands back. Everything that can be checked before queuing is checked
before queuing; what fails then becomes a failed future with a user error, never an HTTP 400.

One area per module, each a part of :class:`TinkerService` over the shared state of
:class:`~.core.ServiceCore`: ``lifecycle`` (sessions), ``training`` (models, forward_backward,
optim_step), ``weights`` (save and load), ``sampling`` and ``rest`` (the ``RestClient`` calls).
"""

from __future__ import annotations

from .core import Overloaded, ServiceCore, SessionGone
from .lifecycle import SessionOps
from .rest import CheckpointRestOps
from .sampling import SamplingOps
from .training import TrainingOps
from .weights import WeightOps


class TinkerService(SessionOps, TrainingOps, WeightOps, SamplingOps, CheckpointRestOps):
    """Serves the Tinker API for one engine (one base model, many LoRA jobs)."""


__all__ = ["Overloaded", "ServiceCore", "SessionGone", "TinkerService"]
