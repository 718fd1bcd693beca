"""Protobuf on the wire: ``ForwardBackwardRequest`` in, ``ForwardBackwardOutput`` / ``SampleResponse`` out.

The message classes are the SDK's own (``tinker.proto.tinker_public_pb2``); tensors are decoded with
the SDK's ``response_conv`` helper, the inverse of what ``request_conv`` encodes. Everything read
from the wire is checked here, so a malformed body becomes a ``UserError`` naming what was wrong.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard
from google.protobuf.message import DecodeError
from tinker import types
from tinker.proto import tinker_public_pb2 as pb
from tinker.proto.response_conv import _tensor_data_from_proto

from ..errors import UserError

PROTO_CONTENT_TYPE = "application/x-protobuf"
_STOP_REASONS = {"stop": pb.STOP_REASON_STOP, "length": pb.STOP_REASON_LENGTH}


class BodyTooLarge(Exception):
    """A request body (after decompression) over the server's limit."""


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undoes ``Content-Encoding: zstd`` (SDK option ``proto_compress_fwdbwd``), bounded by ``limit``."""
    if not encoding or encoding == "identity":
        return body
    if encoding != "zstd":
        raise UserError(f"Content-Encoding {encoding!r} is not supported; send identity or zstd")
    try:
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read(limit + 1)
    except zstandard.ZstdError as exc:
        raise UserError(f"request body is not valid zstd: {exc}") from exc
    if len(data) > limit:
        raise BodyTooLarge(f"decompressed request body exceeds {limit} bytes")
    return data


@dataclass(frozen=True)
class ForwardBackwardHeader:
    """What is needed to queue a request in order, readable even when its data is malformed."""

    model_id: str
    seq_id: int
    loss_fn: str
    forward_only: bool


def parse_forward_backward(body: bytes) -> tuple[ForwardBackwardHeader, pb.ForwardBackwardRequest]:
    message = pb.ForwardBackwardRequest()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise UserError(f"malformed protobuf: the body is not a ForwardBackwardRequest ({exc})") from exc
    if not message.model_id:
        raise UserError("ForwardBackwardRequest has no model_id")
    header = ForwardBackwardHeader(message.model_id, int(message.seq_id), message.loss_fn,
                                   bool(message.forward_only))
    return header, message


def loss_config(message: pb.ForwardBackwardRequest) -> dict[str, float]:
    """``loss_fn_config_v2`` when set (the SDK dual-writes), else the legacy float map."""
    config: dict[str, float] = {}
    if message.loss_fn_config_v2:
        for key, value in message.loss_fn_config_v2.items():
            if value.WhichOneof("value") != "number":
                raise UserError(f"loss_fn_config[{key!r}] must be a number for the built-in losses")
            config[key] = float(value.number)
    else:
        config = {key: float(value) for key, value in message.loss_fn_config.items()}
    return config


def datums(message: pb.ForwardBackwardRequest) -> list[types.Datum]:
    """The request's data as SDK ``Datum`` objects; every tensor decoded and checked."""
    data = []
    for index, datum in enumerate(message.data):
        where = f"data[{index}]"
        chunks = []
        for c, chunk in enumerate(datum.model_input):
            kind = chunk.WhichOneof("chunk")
            if kind != "encoded_text":
                raise UserError(f"{where}.model_input[{c}] is a {kind or 'empty'} chunk; this server serves "
                                "text-only models, send EncodedTextChunk tokens")
            raw = chunk.encoded_text.tokens
            if len(raw) % 4:
                raise UserError(f"{where}.model_input[{c}] tokens are {len(raw)} bytes, not a whole number "
                                "of int32")
            chunks.append(types.EncodedTextChunk(tokens=np.frombuffer(raw, dtype=np.int32).tolist()))
        inputs = {}
        for name, tensor in datum.loss_fn_inputs.items():
            try:
                decoded = _tensor_data_from_proto(tensor)
                decoded.to_numpy()  # densifies sparse CSR: bad indices fail here, not mid-batch
            except Exception as exc:
                raise UserError(f"{where}.loss_fn_inputs[{name!r}] is not a valid tensor: {exc}") from exc
            inputs[name] = decoded
        model_spans = _spans(datum.model_input_spans, f"{where}.model_input_spans")
        target_spans = _spans(datum.loss_fn_input_spans, f"{where}.loss_fn_input_spans")
        if (model_spans is None) != (target_spans is None):
            raise UserError(f"{where} has only one of model_input_spans and loss_fn_input_spans; provenance "
                            "comes as a pair (Datum.with_provenance sets both)")
        data.append(types.Datum(model_input=types.ModelInput(chunks=chunks), loss_fn_inputs=inputs,
                                model_input_spans=model_spans, loss_fn_input_spans=target_spans))
    return data


def _spans(spans: Any, where: str) -> types.ProvenanceSpans | None:
    """Provenance runs (``stable_reinforce``); ``None`` when the datum carries none."""
    if not spans:
        return None
    decoded: types.ProvenanceSpans = []
    for index, span in enumerate(spans):
        kind = span.WhichOneof("span")
        fields = getattr(span, kind) if kind else None
        if fields is None:
            raise UserError(f"{where}[{index}] is neither a prompt_tokens nor a sampled_tokens span")
        cls = types.PromptProvenanceSpan if kind == "prompt_tokens" else types.SampledProvenanceSpan
        try:
            decoded.append(cls(sequence_id=fields.sequence_id, offset=int(fields.offset),
                               length=int(fields.length)))
        except ValueError as exc:
            raise UserError(f"{where}[{index}]: {exc}") from exc
    return decoded


def encode_forward_backward_output(output: types.ForwardBackwardOutput) -> bytes:
    """One ``ArrayRecord`` holding every per-datum output field as a ragged ``BatchedTensor``."""
    message = pb.ForwardBackwardOutput(loss_fn_output_type=output.loss_fn_output_type or "ArrayRecord")
    for key, value in output.metrics.items():
        message.metrics[key] = float(value)
    outputs = output.loss_fn_outputs
    if outputs:
        record = message.loss_fn_outputs.add(num_datums=len(outputs))
        for name in outputs[0]:
            arrays = [np.ascontiguousarray(o[name].to_numpy(), dtype=np.float32).reshape(-1) for o in outputs]
            offsets = np.concatenate([[0], np.cumsum([a.nbytes for a in arrays])]).astype(np.int64)
            record.fields[name].CopyFrom(
                pb.BatchedTensor(data=b"".join(a.tobytes() for a in arrays), offsets=offsets.tobytes(),
                                 dtype=pb.DTYPE_FLOAT32)
            )
    return message.SerializeToString()


def encode_sample_response(response: types.SampleResponse,
                           prompt_logprobs_last_n: int | None = None) -> bytes:
    message = pb.SampleResponse()
    for sequence in response.sequences:
        message.sequences.add(
            stop_reason=_STOP_REASONS[sequence.stop_reason],
            tokens=np.asarray(sequence.tokens, dtype=np.int32).tobytes(),
            logprobs=np.asarray(sequence.logprobs or [], dtype=np.float32).tobytes(),
        )
    if response.prompt_logprobs_np is not None:
        prompt = np.array(response.prompt_logprobs_np, dtype=np.float32)
        if prompt_logprobs_last_n is not None:
            prompt[: max(len(prompt) - prompt_logprobs_last_n, 0)] = math.nan  # NaN reads as None
        message.prompt_logprobs = prompt.tobytes()
    return message.SerializeToString()

