"""Hostile and out-of-order input: clear user errors, seq_id order, and a server that keeps serving."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import tinker
from tinker import types
from tinker.proto.request_conv import forward_backward_request_to_proto

from helpers.data import sft_datum
from helpers.server import ApiServer

PROTO = {"Content-Type": "application/x-protobuf"}


class Raw:
    """Plain HTTP against the server, for requests the SDK would never send."""

    def __init__(self, api_server: ApiServer, tenant: str = "alice"):
        self.http = httpx.Client(base_url=api_server.url + "/api/v1", timeout=30,
                                 headers={"X-API-Key": api_server.keys[tenant]})
        session = self.http.post("/create_session", json={"tags": [], "sdk_version": "raw"}).json()
        self.session, self.models = session["session_id"], 0
        self.base_model = str(api_server.model_dir)

    def new_model(self) -> str:
        self.models += 1
        future = self.http.post("/create_model", json={"session_id": self.session,
                                                       "model_seq_id": self.models,
                                                       "base_model": self.base_model,
                                                       "lora_config": {"rank": 2, "seed": 0}}).json()
        return self.result(future)["model_id"]

    def result(self, future: dict) -> dict | bytes:
        while True:
            reply = self.http.post("/retrieve_future", json={"request_id": future["request_id"]})
            if reply.headers["content-type"] == "application/x-protobuf":
                return reply.content
            if reply.json().get("type") != "try_again":
                return reply.json()

    def forward_backward(self, model_id: str, seq_id: int, data: list[types.Datum],
                         loss: str = "cross_entropy") -> dict:
        request = types.ForwardBackwardRequest(
            forward_backward_input=types.ForwardBackwardInput(data=data, loss_fn=loss), model_id=model_id,
            seq_id=seq_id)
        return self.post_proto(forward_backward_request_to_proto(request).SerializeToString())

    def post_proto(self, body: bytes) -> dict:
        """A forward_backward request with a raw protobuf body; answers its future."""
        return self.http.post("/forward_backward", content=body, headers=PROTO).json()

    def optim_step(self, model_id: str, seq_id: int) -> dict:
        return self.http.post("/optim_step", json={"model_id": model_id, "seq_id": seq_id,
                                                   "adam_params": {"learning_rate": 1e-3}}).json()


DATUM = sft_datum([2, 20, 21, 22, 1], 2)


@pytest.fixture(scope="module")
def trainer(api_server: ApiServer):
    client = api_server.client("alice")
    yield client.create_lora_training_client(str(api_server.model_dir), rank=2, seed=41).result()
    client.close("success").result()


def test_malformed_protobuf_is_a_user_error(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    future = raw.http.post("/forward_backward", content=b"\xff\xff\xff not protobuf", headers=PROTO).json()
    error = raw.result(future)
    assert error["category"] == "user" and "malformed protobuf" in error["error"]
    assert raw.result(raw.post_proto(b""))["category"] == "user"


def test_malformed_provenance_spans_are_user_errors(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    model = raw.new_model()
    half = types.Datum(model_input=DATUM.model_input, loss_fn_inputs=DATUM.loss_fn_inputs,
                       model_input_spans=[types.SampledProvenanceSpan(sequence_id="x", length=4)],
                       loss_fn_input_spans=[types.SampledProvenanceSpan(sequence_id="x", length=4)])
    message = forward_backward_request_to_proto(types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(data=[half], loss_fn="cross_entropy"),
        model_id=model, seq_id=1))
    del message.data[0].loss_fn_input_spans[:]  # only one of the pair
    error = raw.result(raw.post_proto(message.SerializeToString()))
    assert error["category"] == "user" and "provenance comes as a pair" in error["error"]
    message.data[0].loss_fn_input_spans.add()  # a span of neither kind
    message.seq_id = 2
    error = raw.result(raw.post_proto(message.SerializeToString()))
    assert "neither a prompt_tokens nor a sampled_tokens span" in error["error"]
    # Spans are ignored by the losses that do not use them; the same model keeps training.
    ok = raw.result(raw.forward_backward(model, 3, [half]))
    assert isinstance(ok, bytes)


def test_bad_data_fails_in_turn_and_the_job_continues(api_server: ApiServer, trainer) -> None:
    wrong_shape = types.Datum(model_input=types.ModelInput.from_ints([2, 20, 21]),
                              loss_fn_inputs={"target_tokens": np.array([20, 21], dtype=np.int64),
                                              "weights": np.ones(2, dtype=np.float32)})
    with pytest.raises(tinker.RequestFailedError, match=r"has shape \[2\]; it must be \[3\]"):
        trainer.forward_backward([wrong_shape], "cross_entropy").result()
    out_of_vocab = sft_datum([2, 20, 10**6, 1], 2)
    with pytest.raises(tinker.RequestFailedError, match="outside the model's vocabulary"):
        trainer.forward_backward([out_of_vocab], "cross_entropy").result()
    with pytest.raises(tinker.RequestFailedError, match="unknown loss_fn 'gspo'"):
        trainer.forward_backward([DATUM], "gspo").result()
    # Nothing was accumulated by the failures; the same client keeps training.
    assert trainer.forward_backward([DATUM], "cross_entropy").result().metrics["loss:sum"] > 0
    assert trainer.optim_step(types.AdamParams()).result().metrics["optim/step"] == 1.0


def test_invalid_json_requests_fail_their_future(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    json_type = {"Content-Type": "application/json"}
    not_json = raw.http.post("/create_model", content=b"{not json", headers=json_type)
    error = raw.result(not_json.json())
    assert error["category"] == "user" and "invalid CreateModel request" in error["error"]
    error = raw.result(raw.http.post("/create_model", json={"session_id": raw.session, "model_seq_id": 9,
                                                            "base_model": "someone/else"}).json())
    assert "is not served here" in error["error"]
    error = raw.result(raw.http.post("/create_model", json={"session_id": raw.session, "model_seq_id": 9,
                                                            "base_model": raw.base_model,
                                                            "lora_config": {"rank": 0}}).json())
    assert "rank must be between 1 and 1024" in error["error"]


def test_requests_run_in_seq_id_order_whatever_order_they_arrive(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    model_id = raw.new_model()
    step = raw.optim_step(model_id, 2)  # arrives first, must wait for its gradients
    grads = raw.forward_backward(model_id, 1, [DATUM])
    assert raw.result(step)["metrics"]["optim/step"] == 1.0
    assert isinstance(raw.result(grads), bytes)
    repeated = raw.optim_step(model_id, 2)
    assert "seq_id 2" in raw.result(repeated)["error"] and "already used" in raw.result(repeated)["error"]


def test_a_seq_id_gap_times_out_with_a_clear_error_while_others_are_served(api_server: ApiServer) -> None:
    raw, other = Raw(api_server), Raw(api_server, "bob")
    model_id, other_model = raw.new_model(), other.new_model()
    started = time.monotonic()
    stuck = raw.optim_step(model_id, 3)  # seq_ids 1 and 2 never come
    assert isinstance(other.result(other.forward_backward(other_model, 1, [DATUM])), bytes)
    assert time.monotonic() - started < 1.5  # bob was not held up by alice's gap
    error = raw.result(stuck)
    assert error["category"] == "user"
    assert f"seq_id 1 for {model_id!r} never arrived" in error["error"] and "[3]" in error["error"]
    assert time.monotonic() - started >= 2.0
    # After the gap the job continues with the next seq_id.
    assert isinstance(raw.result(raw.forward_backward(model_id, 4, [DATUM])), bytes)


def test_chunked_batches_sent_concurrently_equal_one_engine_call(api_server: ApiServer, trainer) -> None:
    data = [sft_datum([2, 20 + i, 21 + i, 22 + i, 23, 1], 2) for i in range(7)]  # 4 chunks of <= 2 datums
    over_http = trainer.forward(data, "cross_entropy").result()
    direct = api_server.service.engine.forward(trainer.model_id, data, "cross_entropy")
    assert len(over_http.loss_fn_outputs) == 7
    for got, want in zip(over_http.loss_fn_outputs, direct.loss_fn_outputs, strict=True):
        np.testing.assert_allclose(got["logprobs"].to_numpy(), want["logprobs"].to_numpy(), atol=1e-6)
    assert over_http.metrics["loss:sum"] == pytest.approx(direct.metrics["loss:sum"], abs=1e-4)


def test_oversized_bodies_are_refused(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    limit = api_server.service.config.max_request_bytes
    reply = raw.http.post("/forward_backward", content=b"\0" * (limit + 1), headers=PROTO)
    assert reply.status_code == 413 and reply.json()["category"] == "user"
    chunked = raw.http.post("/forward_backward", content=iter([b"\0" * limit, b"\0"]), headers=PROTO)
    assert chunked.status_code == 413  # no Content-Length: counted while streaming
    assert raw.new_model()  # and the server carries on


def test_a_poll_is_held_then_answered_try_again(api_server: ApiServer) -> None:
    raw = Raw(api_server)
    model_id = raw.new_model()
    stuck = raw.optim_step(model_id, 2)  # waits on seq_id 1, longer than one poll hold
    started = time.monotonic()
    reply = raw.http.post("/retrieve_future", json={"request_id": stuck["request_id"]}).json()
    held = time.monotonic() - started
    if reply.get("type") == "try_again":  # the gap timeout (2 s) is shorter than the hold (5 s) ...
        assert held >= api_server.service.config.poll_hold_seconds - 0.5
    else:  # ... so normally the held poll returns the gap error as soon as it is decided
        assert "never arrived" in reply["error"] and 1.5 < held < api_server.service.config.poll_hold_seconds
