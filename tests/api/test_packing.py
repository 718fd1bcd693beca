"""Packing: many jobs on one engine, served fairly, with results identical to running each alone."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import tinker
import torch
from prometheus_client.parser import text_string_to_metric_families
from tinker import types

from kubetune.api.futures import FutureRecord, JsonResult
from kubetune.api.scheduler import Operation, Scheduler
from kubetune.errors import UserError

from helpers.data import sft_datum
from helpers.server import ApiServer


def test_operation_trace_is_the_engine_timeline(api_server: ApiServer) -> None:
    """``--op-trace``: one line per finished operation, in the order the single worker ran them.

    The server writes an operation's line before it completes the operation's future, so a client
    that holds a result finds the line; ``close()`` answers once its models' unloading is queued,
    and draining the job waits for that last line."""
    trace = api_server.service.config.op_trace

    def traced(job: str) -> list[tuple[str, str]]:
        lines = [json.loads(line) for line in trace.read_text().splitlines()]
        return [(op["operation"], op["outcome"]) for op in lines if op["job"] == job]

    assert api_server.service.drain(timeout=60)  # earlier tests' unloading: no one else writes lines now
    client = api_server.client("bob")
    trainer = client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=107).result()
    trainer.forward_backward([sft_datum([2, 10, 11, 12, 1], 2)], "cross_entropy").result()
    with pytest.raises(tinker.RequestFailedError, match="outside the model's vocabulary"):
        trainer.forward_backward([sft_datum([2, 10, 10**6, 1], 2)], "cross_entropy").result()
    trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    sampler = trainer.save_weights_and_get_sampling_client().result()
    sampler.sample(types.ModelInput.from_ints([2, 10]), 1, types.SamplingParams(max_tokens=2)).result()
    done = [("create_model", "ok"), ("forward_backward", "ok"), ("forward_backward", "user_error"),
            ("optim_step", "ok"), ("save_weights_for_sampler", "ok"), ("sample", "ok")]
    assert traced(trainer.model_id) == done  # every result the client holds is already traced
    client.close("success").result()
    assert api_server.service.drain(trainer.model_id, timeout=60)
    assert traced(trainer.model_id) == [*done, ("unload_model", "ok")]
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert all(op["enqueued"] <= op["started"] and op["seconds"] >= 0 for op in lines)
    runs: dict[float, float] = {}  # a sampling batch's requests share one start and split its time
    for op in lines:
        runs[op["started"]] = runs.get(op["started"], 0.0) + op["seconds"]
    starts = sorted(runs)
    for earlier, later in zip(starts, starts[1:], strict=False):
        assert earlier + runs[earlier] <= later + 1e-5  # one worker: runs never overlap


def run_job(api_server: ApiServer, tenant: str, seed: int) -> dict[str, torch.Tensor]:
    """Three SFT steps on a job of its own; returns the final LoRA tensors."""
    client = api_server.client(tenant)
    try:
        trainer = client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=seed).result()
        data = [sft_datum([2, 10 + seed, 11 + seed, 12 + seed, 13, 1], 2),
                sft_datum([2, 50 + seed, 51, 1], 2)]
        for _ in range(3):
            trainer.forward_backward(data, "cross_entropy")
            trainer.optim_step(types.AdamParams(learning_rate=1e-2))
        sampler = trainer.save_weights_and_get_sampling_client().result()
        prompt = types.ModelInput.from_ints([2, 10 + seed])
        sampler.sample(prompt, 2, types.SamplingParams(max_tokens=3)).result()
        engine = api_server.service.engine
        with engine._lock:  # the worker may be adding another job's adapter right now
            return engine._adapter_tensors(engine._jobs[trainer.model_id])
    finally:
        client.close("success").result()


def test_three_concurrent_clients_match_running_alone_bit_for_bit(api_server: ApiServer) -> None:
    jobs = [("alice", 101), ("bob", 102), ("alice", 103)]
    alone = [run_job(api_server, tenant, seed) for tenant, seed in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        packed = list(pool.map(lambda job: run_job(api_server, *job), jobs))
    for solo, together in zip(alone, packed, strict=True):
        assert solo.keys() == together.keys()
        for name in solo:
            assert torch.equal(solo[name], together[name]), name


def test_round_robin_across_jobs_and_seq_order_within_one() -> None:
    order: list[str] = []
    done = threading.Event()

    def op(job: str, label: str, seq: int | None = None) -> Operation:
        def run() -> JsonResult:
            order.append(label)
            if len(order) == 7:
                done.set()
            return JsonResult({})
        return Operation(job=job, name="test", run=run, future=FutureRecord(label, "t", "test"), seq_id=seq)

    scheduler = Scheduler(lambda record, result: None)
    for seq in (3, 1, 2, 4, 5):  # job A's whole batch arrives first, out of order
        scheduler.submit(op("A", f"A{seq}", seq))
    scheduler.submit(op("B", "B1"))
    scheduler.submit(op("C", "C1"))
    assert scheduler.depth() == 7 and scheduler.depth("A") == 5
    scheduler.start()
    try:
        assert done.wait(10)
    finally:
        scheduler.stop()
    # A's long queue does not starve B and C: one operation per job per turn.
    assert order == ["A1", "B1", "C1", "A2", "A3", "A4", "A5"]


def test_an_operation_is_recorded_before_its_future_completes_and_wait_idle_sees_both() -> None:
    events: list[str] = []
    release = threading.Event()

    def run() -> JsonResult:
        assert release.wait(10)
        return JsonResult({})

    scheduler = Scheduler(lambda record, result: events.append("completed"),
                          on_done=lambda op, started, seconds, result: events.append("recorded"))
    scheduler.submit(Operation(job="A", name="test", run=run, future=FutureRecord("a", "t", "test")))
    scheduler.start()
    try:
        assert not scheduler.wait_idle("A", timeout=0.05)  # queued or running: not idle
        assert scheduler.wait_idle("B", timeout=0)  # another job is
        release.set()
        assert scheduler.wait_idle("A", timeout=10) and scheduler.wait_idle(timeout=10)
        assert events == ["recorded", "completed"]
    finally:
        scheduler.stop()


def test_queued_operations_with_one_batch_key_run_as_one_batch() -> None:
    """The worker takes a job's queued same-key operations together, other keys and jobs keep their turn,
    and a batch that fails answers each operation on its own."""
    calls: list[list[str]] = []
    results: dict[str, object] = {}
    done = threading.Event()

    def batched(ops: list[Operation]) -> list[JsonResult]:
        labels = [o.payload for o in ops]
        calls.append(labels)
        if "bad" in labels:
            raise ValueError("one member is broken")
        return [JsonResult({"label": label, "batch": len(labels)}) for label in labels]

    def op(job: str, label: str, key: str | None, weight: int = 1) -> Operation:
        def run() -> JsonResult:
            calls.append([label])
            if label == "bad":
                raise UserError("bad prompt")
            return JsonResult({"label": label, "batch": 1})
        return Operation(job=job, name="sample", run=run, future=FutureRecord(label, "t", "sample"),
                         batch_key=key, run_batch=batched, weight=weight, payload=label)

    def complete(record: FutureRecord, result) -> None:
        results[record.request_id] = result
        if len(results) == 8:
            done.set()

    scheduler = Scheduler(complete, max_batch=4)
    for label in ("a1", "a2", "a3"):
        scheduler.submit(op("A", label, "k"))
    scheduler.submit(op("A", "other", "k2"))
    scheduler.submit(op("A", "a4", "k", weight=2))  # does not fit next to a1..a3 in 4 rows
    scheduler.submit(op("B", "b1", "k"))  # same key, other job: its own turn
    scheduler.submit(op("C", "c1", "x"))
    scheduler.submit(op("C", "bad", "x"))
    scheduler.start()
    try:
        assert done.wait(10)
    finally:
        scheduler.stop()
    assert calls[:3] == [["a1", "a2", "a3"], ["b1"], ["c1", "bad"]]
    assert calls[3:5] == [["c1"], ["bad"]]  # the failed batch, one by one
    assert ["other"] in calls and ["a4"] in calls
    assert results["a2"].body == {"label": "a2", "batch": 3}
    assert results["c1"].body == {"label": "c1", "batch": 1} and "bad prompt" in results["bad"].body["error"]


def test_concurrent_greedy_requests_are_batched_and_match_one_by_one(api_server: ApiServer) -> None:
    client = api_server.client("alice")
    try:
        sampler = client.create_sampling_client(base_model=str(api_server.model_dir)).result()
        greedy = types.SamplingParams(max_tokens=5, temperature=0.0, stop=[])
        prompts = [[2, 10 + i, 20 + i % 7] + [30] * (i % 4) for i in range(24)]
        alone = [sampler.sample(types.ModelInput.from_ints(p), 1, greedy).result().sequences[0]
                 for p in prompts]
        engine = api_server.service.engine
        sizes: list[int] = []
        original = engine.sample_batch

        def counting(prompts_, *args, **kwargs):
            sizes.append(len(prompts_))
            return original(prompts_, *args, **kwargs)

        engine.sample_batch = counting
        try:
            futures = [sampler.sample(types.ModelInput.from_ints(p), 1, greedy) for p in prompts]
            together = [f.result().sequences[0] for f in futures]
            batched, sizes[:] = list(sizes), []
            # Scoring feeds training (reference log-probabilities): never batched, so exact.
            scores = [sampler.compute_logprobs(types.ModelInput.from_ints(p)) for p in prompts]
            scored = [f.result() for f in scores]
        finally:
            del engine.sample_batch
        assert [s.tokens for s in together] == [s.tokens for s in alone]
        for a, b in zip(alone, together, strict=True):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert sum(batched) == len(prompts) and max(batched) > 1 and len(batched) < len(prompts), batched
        assert sizes == [1] * len(prompts)
        assert scored == [sampler.compute_logprobs(types.ModelInput.from_ints(p)).result() for p in prompts]
    finally:
        client.close("success").result()


def scrape(api_server: ApiServer) -> dict[tuple[str, tuple], float]:
    reply = httpx.get(api_server.url + "/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def test_metrics_exposition(api_server: ApiServer) -> None:
    client = api_server.client("bob")
    trainer = client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=105).result()
    trainer.forward_backward([sft_datum([2, 10, 11, 12, 1], 2)], "cross_entropy").result()
    live = scrape(api_server)
    assert live[("kubetune_job_tokens_trained_total", (("job", trainer.model_id),))] == 4
    assert live[("kubetune_job_queue_depth", (("job", trainer.model_id),))] == 0
    client.close("success").result()
    assert api_server.service.drain(trainer.model_id, timeout=60)  # the unloading close() queued
    run_job(api_server, "bob", 104)
    reply = httpx.get(api_server.url + "/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(reply.text) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("kubetune_api_requests_total", endpoint="/api/v1/retrieve_future", outcome="2xx") > 0
    assert value("kubetune_api_requests_total", endpoint="/api/v1/forward_backward", outcome="2xx") > 0
    assert value("kubetune_operations_total", operation="forward_backward", outcome="ok") >= 3
    assert value("kubetune_operations_total", operation="sample", outcome="ok") >= 1
    assert value("kubetune_operation_seconds_count", operation="optim_step") >= 3
    assert value("kubetune_queue_wait_seconds_count", operation="forward_backward") >= 3
    assert value("kubetune_engine_busy_seconds_total") > 0
    assert 0 < value("kubetune_engine_busy_fraction") <= 1
    assert ("kubetune_queue_depth", ()) in samples and ("kubetune_active_jobs", ()) in samples
    assert value("kubetune_tokens_trained_total") >= 4 + 3 * 8 and value("kubetune_tokens_sampled_total") > 0
    unloaded = ("kubetune_job_tokens_trained_total", (("job", trainer.model_id),))
    assert unloaded not in samples  # its series went with the job
    assert httpx.get(api_server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(api_server.url + "/readyz").status_code == 200
