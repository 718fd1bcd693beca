"""The long-poll future store: every mutating call returns a ``request_id``; results wait here.

The SDK polls ``retrieve_future`` with a 45 s client timeout and re-polls at once on ``try_again``,
so a poll is held open until the result is ready or ``hold`` seconds pass. Results are written by
the scheduler's worker thread and read by the event loop; completion crosses threads through
``loop.call_soon_threadsafe``. A completed future is kept for ``keep_seconds`` (the SDK may poll
again after a dropped connection), then forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from ..errors import EngineError


@dataclass(frozen=True)
class JsonResult:
    body: dict


@dataclass(frozen=True)
class ProtoResult:
    body: bytes


@dataclass(frozen=True)
class ErrorResult:
    message: str
    category: Literal["user", "server", "unknown"]

    @property
    def body(self) -> dict:
        return {"error": self.message, "category": self.category}

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorResult:
        if isinstance(exc, EngineError):
            return cls(str(exc), exc.category)  # type: ignore[arg-type]
        return cls(f"internal server error: {type(exc).__name__}: {exc}", "server")


Result = JsonResult | ProtoResult | ErrorResult


@dataclass
class FutureRecord:
    request_id: str
    tenant: str
    operation: str
    created: float = field(default_factory=time.monotonic)
    result: Result | None = None
    completed: float | None = None
    _event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class FutureStore:
    """Futures by request id, each visible only to the tenant that created it."""

    def __init__(self, keep_seconds: float = 15 * 60.0):
        self._futures: dict[str, FutureRecord] = {}
        self._lock = threading.Lock()
        self._keep = keep_seconds
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that waits on futures (set at server start-up)."""
        self._loop = loop

    def create(self, tenant: str, operation: str) -> FutureRecord:
        record = FutureRecord(request_id=uuid.uuid4().hex, tenant=tenant, operation=operation)
        with self._lock:
            self._expire_locked()
            self._futures[record.request_id] = record
        return record

    def get(self, tenant: str, request_id: str) -> FutureRecord | None:
        with self._lock:
            record = self._futures.get(request_id)
        # Another tenant's request id reads exactly like an unknown one.
        return record if record is not None and record.tenant == tenant else None

    def complete(self, record: FutureRecord, result: Result) -> None:
        """Stores the result and wakes the pollers; callable from any thread."""
        record.result = result
        record.completed = time.monotonic()
        loop = self._loop
        if loop is None:
            record._event.set()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing at shutdown
            loop.call_soon_threadsafe(record._event.set)

    async def wait(self, record: FutureRecord, hold: float) -> Result | None:
        """The result, or ``None`` if it is not ready within ``hold`` seconds."""
        if record.result is None:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(record._event.wait(), timeout=hold)
        return record.result

    def pending(self) -> int:
        with self._lock:
            return sum(1 for r in self._futures.values() if r.result is None)

    def _expire_locked(self) -> None:
        now = time.monotonic()
        stale = [rid for rid, r in self._futures.items()
                 if r.completed is not None and now - r.completed > self._keep]
        for rid in stale:
            del self._futures[rid]
