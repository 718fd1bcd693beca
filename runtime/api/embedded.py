"""A training server inside the current process, for a recipe run with no shared server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import CheckpointRef
from .service import TinkerService


@contextmanager
def running_server(service, start_timeout_s: float = 600.0) -> Iterator[str]:
    """Serves ``service`` (a :class:`~kubetune.api.TinkerService`) on a free loopback port, in a
    background thread, until the block ends; yields the base URL."""
    import uvicorn

    from .app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kubetune-embedded-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded training server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass(frozen=True)
class EmbeddedServer:
    url: str  # for tinker.ServiceClient(base_url=...)
    model_name: str  # what create_lora_training_client(base_model=...) must be given
    service: TinkerService

    def local_path(self, api_key: str, tinker_path: str) -> Path:
        """Where a ``tinker://…/sampler_weights/<name>`` (or ``external_weights``) checkpoint of this
        server lies on disk (a PEFT adapter directory for ``kubetune eval --adapter``), or a
        ``weights`` checkpoint's training state directory."""
        tenant = self.service.tenants.resolve(api_key)
        if tenant is None:
            raise ValueError("not an API key of this server")
        ref = CheckpointRef.parse(tinker_path)
        store = self.service.store
        return store.state_dir(tenant, ref) if ref.kind == "weights" else store.sampler_dir(tenant, ref)


@contextmanager
def embedded_server(base_model: str, checkpoint_dir: Path) -> Iterator[EmbeddedServer]:
    """Loads ``base_model`` and serves it until the block ends."""
    from .server import build_service

    service = build_service(base_model, checkpoint_dir=Path(checkpoint_dir))
    with running_server(service) as url:
        yield EmbeddedServer(url, service.config.base_model, service)
