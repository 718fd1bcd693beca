"""Every setting of the training server, read in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    """How one ``kubetune serve`` process behaves.

    Attributes:
        base_model: The name the server advertises for its base model. Clients pass it to
            ``create_lora_training_client`` and load its tokenizer with
            ``AutoTokenizer.from_pretrained(base_model)``, so it must resolve on the client's
            machine: for a local model it is the model directory's path.
        aliases: Other names accepted for the same base model (e.g. the reference it was loaded from).
        checkpoint_dir: Root of the checkpoint store; ``tinker://`` paths map under it, per tenant.
        api_keys: ``tml-…`` key -> tenant. ``None`` means open mode: every well-formed key is
            accepted and is its own tenant (fine on loopback, never on a shared network).
        poll_hold_seconds: How long ``retrieve_future`` holds a pending request before answering
            ``try_again``; the SDK times a poll out at 45 s and re-polls at once.
        seq_gap_timeout_seconds: How long a training request waits for a missing earlier ``seq_id``
            before it fails with a user error.
        max_request_bytes: Largest request body accepted (after decompression).
        max_queued_operations: Queued operations beyond which new work is refused with HTTP 429
            (the SDK backs off and retries).
        session_timeout_seconds: A session with no heartbeat for this long is finished and its
            models are unloaded (the SDK heartbeats every 10 s).
        snapshots_per_model: Ephemeral sampler snapshots kept per model; older samplers expire.
        fwdbwd_max_chunk_len: Datums per forward_backward request the SDK is told to send; larger
            batches arrive as concurrent chunks with consecutive seq_ids.
        url_signing_secret: HMAC key of the signed download URLs of external weights (at least 32
            characters). ``None``: a random key per process, so URLs die with the process and only
            the replica that issued them accepts them; replicas behind one address must share it
            (``KUBETUNE_URL_SIGNING_SECRET``).
        external_url_ttl_seconds: How long a signed download URL stays valid.
        max_sample_batch: Most sampled rows (prompts × samples) one engine batch answers when
            queued sampling requests are batched; 1 turns batching off (docs/server.md).
        op_trace: File to append one JSON line to per finished engine operation (job, operation,
            when it was queued, started and finished on the monotonic clock, outcome): the timeline
            that shows where the engine idles. ``None``: no trace.
    """

    base_model: str
    checkpoint_dir: Path
    aliases: frozenset[str] = field(default_factory=frozenset)
    api_keys: dict[str, str] | None = None
    poll_hold_seconds: float = 20.0
    seq_gap_timeout_seconds: float = 30.0
    max_request_bytes: int = 64 * 1024 * 1024
    max_queued_operations: int = 4096
    session_timeout_seconds: float = 30 * 60.0
    snapshots_per_model: int = 4
    max_sample_batch: int = 64
    fwdbwd_max_chunk_len: int = 1024
    url_signing_secret: str | None = field(default=None, repr=False)  # never in logs
    external_url_ttl_seconds: float = 3600.0
    op_trace: Path | None = None

    def accepts_base_model(self, name: str | None) -> bool:
        return name is None or name == self.base_model or name in self.aliases
