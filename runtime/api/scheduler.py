"""Fair scheduling of engine operations across jobs: one worker thread, one queue per job.

Policy (documented in docs/server.md):

- **One engine, one worker.** Every operation that touches the engine runs on a single worker
  thread, one at a time, so the engine never switches adapters mid-operation.
- **Per-job queues, round robin.** Each job (a training run, keyed by ``model_id``; base-model
  sampling is keyed per session) has its own queue. The worker serves the jobs that have a ready
  operation in turn, one operation per job per turn, so a job that queued a long batch of
  requests waits behind at most one operation of every other job, never behind their whole queues.
- **``seq_id`` order inside a job.** Training requests carry a strictly increasing ``seq_id``
  (starting at 1) and may arrive out of order (the SDK sends a batch's chunks concurrently). An
  operation is ready only when every smaller ``seq_id`` of its job has run. A missing ``seq_id``
  holds the job's ordered requests for ``gap_timeout`` seconds; then they fail with a user error
  that names the gap, and the job continues after them. A repeated or old ``seq_id`` fails at once.
- Operations without a ``seq_id`` (sampling, model creation) are FIFO within their job; between a
  job's ordered and unordered operations, the one that arrived first runs first.
- **Batched sampling.** When the worker takes a sampling operation, it also takes the job's other
  queued sampling operations with the same batch key (same weights, sampling parameters and
  options; see ``TinkerService.sample``), up to ``max_batch``, and runs them as one engine batch:
  a client that sends a hundred one-prompt requests at once (an evaluation) costs a few batched
  forward passes instead of a hundred. A batch is one turn of its job.
- **Recorded, then answered.** An operation's listeners (metrics, the operation trace) run before
  its future completes, so a client that holds a result finds the operation counted and traced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from .futures import ErrorResult, FutureRecord, Result

log = logging.getLogger(__name__)

FIRST_SEQ_ID = 1  # the SDK's first request on a training client has seq_id = 0 + 1


@dataclass
class Operation:
    """One unit of engine work; ``run`` returns the future's result or raises."""

    job: str
    name: str
    run: Callable[[], Result]
    future: FutureRecord
    seq_id: int | None = None
    enqueued: float = field(default_factory=time.monotonic)
    # Operations with equal batch keys may run together: ``run_batch`` gets all of them (this one
    # first) and returns one result per operation, in order.
    batch_key: Hashable | None = None
    run_batch: Callable[[list[Operation]], list[Result]] | None = None
    weight: int = 1  # rows this operation adds to a batch (e.g. samples per prompt)
    payload: Any = None  # what run_batch needs of this operation (e.g. its request)


@dataclass
class _JobQueue:
    next_seq: int = FIRST_SEQ_ID
    ordered: dict[int, Operation] = field(default_factory=dict)
    fifo: deque[Operation] = field(default_factory=deque)

    def depth(self) -> int:
        return len(self.ordered) + len(self.fifo)

    def pop_batchable(self, key: Hashable, room: int) -> list[Operation]:
        """Queued unordered operations with batch key ``key``, oldest first, up to ``room`` rows."""
        taken: list[Operation] = []
        for op in list(self.fifo):
            if op.batch_key == key and op.weight <= room:
                self.fifo.remove(op)
                taken.append(op)
                room -= op.weight
        return taken

    def pop_ready(self) -> Operation | None:
        ordered = self.ordered.get(self.next_seq)
        unordered = self.fifo[0] if self.fifo else None
        if ordered is not None and (unordered is None or ordered.enqueued <= unordered.enqueued):
            del self.ordered[self.next_seq]
            self.next_seq += 1
            return ordered
        if unordered is not None:
            return self.fifo.popleft()
        return None


# op, started (monotonic, shared by a batch), run s (a batch's time split evenly), result
Listener = Callable[[Operation, float, float, Result], None]


class Scheduler:
    """Runs operations on one worker thread, fairly across jobs and in ``seq_id`` order within one.

    Args:
        complete: stores an operation's result (the future store's ``complete``).
        gap_timeout: seconds a job's ordered requests wait for a missing ``seq_id``.
        on_done: called after each operation, before its future completes, with its start and
            run time (metrics, operation trace).
    """

    def __init__(self, complete: Callable[[FutureRecord, Result], None], *, gap_timeout: float = 30.0,
                 on_done: Listener | None = None, max_batch: int = 64):
        self._complete = complete
        self._gap_timeout = gap_timeout
        self._max_batch = max_batch
        self._on_done = on_done
        self._jobs: dict[str, _JobQueue] = {}
        self._rotation: deque[str] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.running: Operation | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kubetune-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ----------------------------------------------------------- submission
    def submit(self, op: Operation) -> None:
        """Queues ``op``; a stale or repeated ``seq_id`` fails its future at once."""
        with self._cond:
            queue = self._jobs.get(op.job)
            if queue is None:
                queue = self._jobs[op.job] = _JobQueue()
                self._rotation.append(op.job)
            if op.seq_id is not None:
                if op.seq_id < queue.next_seq or op.seq_id in queue.ordered:
                    error = UserError(
                        f"seq_id {op.seq_id} for {op.job!r} was already used (next expected: "
                        f"{queue.next_seq}); seq_ids must strictly increase, one per request"
                    )
                    self._complete(op.future, ErrorResult.from_exception(error))
                    return
                queue.ordered[op.seq_id] = op
            else:
                queue.fifo.append(op)
            self._cond.notify_all()

    def depth(self, job: str | None = None) -> int:
        with self._cond:
            return self._depth_locked(job)

    def _depth_locked(self, job: str | None) -> int:
        if job is not None:
            queue = self._jobs.get(job)
            return queue.depth() if queue else 0
        return sum(q.depth() for q in self._jobs.values())

    def wait_idle(self, job: str | None = None, timeout: float | None = None) -> bool:
        """Waits until ``job`` (or every job) has nothing queued or running and its listeners have
        run; ``False`` if that takes longer than ``timeout`` seconds."""

        def idle() -> bool:
            running = self.running
            busy = running is not None and (job is None or running.job == job)
            return not busy and self._depth_locked(job) == 0

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def depths(self) -> dict[str, int]:
        with self._cond:
            return {job: q.depth() for job, q in self._jobs.items()}

    def forget(self, job: str) -> None:
        """Drops a job's queue once it is empty (the job was unloaded)."""
        with self._cond:
            queue = self._jobs.get(job)
            if queue is not None and queue.depth() == 0:
                del self._jobs[job]
                self._rotation.remove(job)

    # --------------------------------------------------------------- worker
    def _next(self) -> Operation | None:
        """Round robin: each inspected job moves to the back of the rotation."""
        for _ in range(len(self._rotation)):
            job = self._rotation[0]
            self._rotation.rotate(-1)
            op = self._jobs[job].pop_ready()
            if op is not None:
                return op
        return None

    def _expire_gaps(self) -> float | None:
        """Fails ordered requests stuck behind a missing seq_id; returns seconds to the next expiry."""
        now = time.monotonic()
        soonest: float | None = None
        for job, queue in self._jobs.items():
            if not queue.ordered or queue.next_seq in queue.ordered:
                continue
            oldest = min(op.enqueued for op in queue.ordered.values())
            remaining = oldest + self._gap_timeout - now
            if remaining > 0:
                soonest = remaining if soonest is None else min(soonest, remaining)
                continue
            waiting = sorted(queue.ordered)
            error = UserError(
                f"seq_id {queue.next_seq} for {job!r} never arrived within {self._gap_timeout:g} s, so "
                f"requests with seq_ids {waiting} cannot run in order and were dropped; send one request "
                "per seq_id, counting up from the last one that succeeded"
            )
            for seq in waiting:
                self._complete(queue.ordered.pop(seq).future, ErrorResult.from_exception(error))
            queue.next_seq = waiting[-1] + 1
        return soonest

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.monotonic()
            results = self._run(batch)
            self._finish(batch, results, started, time.monotonic())

    def _take(self) -> list[Operation] | None:
        """The next operation (with its batch mates), waiting for one; ``None`` once stopping."""
        with self._cond:
            op = None
            while op is None:
                if self._stopping:
                    return None
                wake_in = self._expire_gaps()
                op = self._next()
                if op is None:
                    self._cond.wait(timeout=wake_in)
            batch = [op]
            if op.batch_key is not None and op.run_batch is not None:
                batch += self._jobs[op.job].pop_batchable(op.batch_key, self._max_batch - op.weight)
            self.running = op
            return batch

    def _finish(self, batch: list[Operation], results: list[Result], started: float, finished: float) -> None:
        # Listeners first, futures second: a client holding a result finds its operation already
        # counted in the metrics and written to the operation trace.
        if self._on_done is not None:
            share = (finished - started) / len(batch)  # engine time, split across the batch
            for member, result in zip(batch, results, strict=True):
                try:
                    self._on_done(member, started, share, result)
                except Exception:  # metrics must never stop the worker
                    log.exception("operation listener failed")
        for member, result in zip(batch, results, strict=True):
            self._complete(member.future, result)
        with self._cond:
            self.running = None
            self._cond.notify_all()  # wakes wait_idle

    @staticmethod
    def _run(batch: list[Operation]) -> list[Result]:
        """Results of one operation or one batch; every failure becomes the futures' error."""
        if len(batch) > 1:
            try:
                results = batch[0].run_batch(batch)  # type: ignore[misc]
                if len(results) == len(batch):
                    return results
            except Exception:  # e.g. one over-long prompt: each request then gets its own answer
                log.info("a batch of %d %s operations failed; running them one by one", len(batch),
                         batch[0].name)
        results = []
        for op in batch:
            try:
                results.append(op.run())
            except Exception as exc:  # every failure becomes the future's error; the worker lives on
                if not isinstance(exc, UserError):
                    log.exception("operation %s for %s failed", op.name, op.job)
                results.append(ErrorResult.from_exception(exc))
        return results
