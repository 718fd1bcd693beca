"""The sampling-record store behind ``stable_reinforce``: scope, expiry refreshed by use, bounded size."""

from __future__ import annotations

import numpy as np
import pytest
from tinker import types

from kubetune.api.stability import StabilityRecords
from kubetune.errors import UserError
from kubetune.recipes.data import with_sample_provenance


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def datum(sequence_id: str, prompt: list[int], sampled: list[int]) -> types.Datum:
    tokens = prompt + sampled
    base = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": np.asarray(tokens[1:], dtype=np.int64),
                                       "advantages": np.ones(len(tokens) - 1, dtype=np.float32)})
    return with_sample_provenance(base, sequence_id, len(prompt), len(sampled))


def test_resolve_returns_the_recorded_logprobs_on_sampled_positions_only() -> None:
    store = StabilityRecords()
    store.record("alice", "s1", "seq", [5, 6, 7], [8, 9], [-0.5, -1.25])
    logprobs, mask = store.resolve("alice", "s1", datum("seq", [5, 6, 7], [8, 9]), "data[0]")
    np.testing.assert_array_equal(mask, [0, 0, 1, 1])
    np.testing.assert_array_equal(logprobs, [0, 0, -0.5, -1.25])
    with pytest.raises(UserError, match="has no record"):
        store.resolve("bob", "s1", datum("seq", [5, 6, 7], [8, 9]), "data[0]")  # another tenant
    with pytest.raises(UserError, match="has no record"):
        store.resolve("alice", "s2", datum("seq", [5, 6, 7], [8, 9]), "data[0]")  # another session
    with pytest.raises(UserError, match="reads 3 tokens from offset 0"):
        store.resolve("alice", "s1", datum("seq", [5, 6, 7], [8, 9, 10]), "data[0]")  # past the record


def test_records_expire_a_day_after_their_last_use_and_the_oldest_go_first() -> None:
    clock = Clock()
    store = StabilityRecords(max_records=2, clock=clock)
    store.record("alice", "s", "a", [1, 2], [3], [-1.0])
    clock.now = 20 * 3600.0
    store.resolve("alice", "s", datum("a", [1, 2], [3]), "d")  # use restarts the day
    clock.now = 40 * 3600.0
    store.resolve("alice", "s", datum("a", [1, 2], [3]), "d")  # 20 h after the last use: still there
    clock.now = 64.5 * 3600.0
    with pytest.raises(UserError, match="has no record"):
        store.resolve("alice", "s", datum("a", [1, 2], [3]), "d")  # 24.5 h idle: gone
    store.record("alice", "s", "b", [1, 2], [3], [-1.0])
    store.record("alice", "s", "c", [1, 2], [3], [-1.0])
    store.resolve("alice", "s", datum("b", [1, 2], [3]), "d")  # b is now the most recently used
    store.record("alice", "s", "d", [1, 2], [3], [-1.0])  # over max_records: c, the least recent, goes
    assert len(store) == 2
    with pytest.raises(UserError, match="has no record"):
        store.resolve("alice", "s", datum("c", [1, 2], [3]), "d")
    store.resolve("alice", "s", datum("b", [1, 2], [3]), "d")
