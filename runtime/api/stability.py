"""Sampling records for ``stable_reinforce``: what the server sampled, found again by provenance spans.

A sample request with ``record_stability_info`` stores, for each ``sequence_id`` it returns, the
prompt, the sampled tokens and the log-probabilities the server computed while sampling them. A
training datum's provenance spans (``Datum.with_provenance``) claim, run by run, which sequence and
offset each of its positions reproduces. The resolver checks every claim against the record and turns
the target spans into the two per-position inputs of the loss: ``sampler_logprobs`` (the recorded
log-probability on sampled positions) and ``sampled_mask`` (1 there, 0 on prompt positions).

Scope, as Tinker documents it: a record belongs to the session that sampled it and lives one day
from its last use (the sampling, or a training request naming it). Memory is bounded: beyond
``max_records`` the least recently used record is dropped first. Tokens and log-probabilities are
kept as 4-byte arrays and the samples of one request share one prompt array, so a record of a
1,000-token completion costs about 8 KB.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tinker import types

from ..errors import UserError

DAY_SECONDS = 24 * 3600.0
Span = types.PromptProvenanceSpan | types.SampledProvenanceSpan


@dataclass
class SequenceRecord:
    tenant: str
    session_id: str
    prompt: np.ndarray  # int32, shared by the samples of one request
    tokens: np.ndarray  # int32
    logprobs: np.ndarray  # float32
    touched: float


class StabilityRecords:
    """Thread-safe store of recorded sequences, keyed by ``sequence_id``."""

    def __init__(self, *, ttl_seconds: float = DAY_SECONDS, max_records: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_seconds = ttl_seconds
        self.max_records = max_records
        self._clock = clock
        self._records: OrderedDict[str, SequenceRecord] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def record(self, tenant: str, session_id: str, sequence_id: str, prompt: Sequence[int] | np.ndarray,
               tokens: Sequence[int], logprobs: Sequence[float]) -> None:
        """Keeps one sampled sequence; pass the samples of one request the same ``prompt`` array."""
        if len(logprobs) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(logprobs)} log-probabilities for "
                             f"{sequence_id!r}")
        now = self._clock()
        record = SequenceRecord(tenant, session_id, np.asarray(prompt, dtype=np.int32),
                                np.asarray(tokens, dtype=np.int32), np.asarray(logprobs, dtype=np.float32),
                                now)
        with self._lock:
            self._records[sequence_id] = record
            self._records.move_to_end(sequence_id)
            self._expire(now)

    def resolve(self, tenant: str, session_id: str, datum: types.Datum,
                where: str) -> tuple[np.ndarray, np.ndarray]:
        """``(sampler_logprobs, sampled_mask)`` for the datum's target positions; every span checked."""
        if datum.loss_fn_input_spans is None or datum.model_input_spans is None:
            raise UserError(
                f"{where} has no provenance; stable_reinforce needs every datum to name the sampled sequence "
                "behind its tokens: sample with record_stability_info=True, then attach spans with "
                "Datum.with_provenance(model_input=..., loss_fn_inputs=...) using each sequence's sequence_id"
            )
        targets = datum.loss_fn_inputs["target_tokens"].to_numpy().astype(np.int64).reshape(-1)
        inputs = np.asarray(datum.model_input.to_ints(), dtype=np.int64)
        now = self._clock()
        with self._lock:
            self._expire(now)
            self._check_tokens(tenant, session_id, datum.model_input_spans, inputs, f"{where}.model_input",
                               now)
            logprobs = np.zeros(len(targets), dtype=np.float32)
            mask = np.zeros(len(targets), dtype=np.float32)
            position = 0
            for span, record in self._check_tokens(tenant, session_id, datum.loss_fn_input_spans, targets,
                                                   f"{where}.loss_fn_inputs['target_tokens']", now):
                if isinstance(span, types.SampledProvenanceSpan):
                    source = slice(span.offset, span.offset + span.length)
                    logprobs[position:position + span.length] = record.logprobs[source]
                    mask[position:position + span.length] = 1.0
                position += span.length
        if not mask.any():
            raise UserError(f"{where} has no sampled target token (its spans name prompts only); "
                            "stable_reinforce trains on sampled tokens")
        return logprobs, mask

    def _check_tokens(self, tenant: str, session_id: str, spans: types.ProvenanceSpans, tokens: np.ndarray,
                      what: str, now: float) -> list[tuple[Span, SequenceRecord]]:
        covered = sum(span.length for span in spans)
        if covered != len(tokens):
            raise UserError(f"{what} provenance spans cover {covered} positions but it has {len(tokens)}; "
                            "the spans must tile it exactly")
        checked = []
        position = 0
        for span in spans:
            record = self._records.get(span.sequence_id)
            if record is None or record.tenant != tenant or record.session_id != session_id:
                raise UserError(
                    f"{what} names sequence {span.sequence_id!r}, which this session has no record of: "
                    "records exist only for samples taken with record_stability_info=True in the same "
                    f"session as the training run, for {self.ttl_seconds / 3600:g} h after their last use"
                )
            sampled = isinstance(span, types.SampledProvenanceSpan)
            source = record.tokens if sampled else record.prompt
            if span.offset + span.length > len(source):
                raise UserError(f"{what} span at position {position} reads {span.length} tokens from offset "
                                f"{span.offset} of sequence {span.sequence_id!r}'s "
                                f"{'sampled tokens' if sampled else 'prompt'}, which has {len(source)}")
            if not np.array_equal(tokens[position:position + span.length],
                                  source[span.offset:span.offset + span.length]):
                raise UserError(f"{what} positions {position}..{position + span.length - 1} are not the "
                                f"tokens of sequence {span.sequence_id!r}'s "
                                f"{'sampled tokens' if sampled else 'prompt'} from offset {span.offset}; the "
                                "spans must describe the datum as built")
            record.touched = now
            self._records.move_to_end(span.sequence_id)
            checked.append((span, record))
            position += span.length
        return checked

    def _expire(self, now: float) -> None:
        while self._records:
            sequence_id, oldest = next(iter(self._records.items()))
            if len(self._records) <= self.max_records and now - oldest.touched < self.ttl_seconds:
                break
            del self._records[sequence_id]
