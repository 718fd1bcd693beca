"""``kubetune serve``: load the base model once, put the engine behind the Tinker API, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

from ..engine import Engine
from .app import create_app
from .config import ServerConfig
from .external import SECRET_ENV
from .service import TinkerService
from .tenants import KEYS_ENV, load_keys

log = logging.getLogger(__name__)


def build_service(base_model_ref: str, *, checkpoint_dir: Path, keys_file: Path | None = None,
                  **settings: Any) -> TinkerService:
    """Loads the model named by ``base_model_ref`` and wraps it in a service.

    The advertised model name is what clients pass to ``AutoTokenizer.from_pretrained``: the model's
    local directory for ``tiny`` and local paths (no Hub download), the Hub id otherwise.
    """
    from ..models.reference import load_base_model, resolve_model_ref
    from ..tasks.text2sql import pretraining_corpus  # the embedded tiny model is pretrained on it

    resolved = resolve_model_ref(base_model_ref)
    model, tokenizer = load_base_model(base_model_ref, tiny_corpus=pretraining_corpus)
    advertised = str(Path(resolved.source).resolve()) if resolved.kind != "hub" else resolved.source
    engine = Engine(model, tokenizer, base_model=advertised)
    config = ServerConfig(
        base_model=advertised,
        aliases=frozenset({base_model_ref, resolved.source}),
        checkpoint_dir=checkpoint_dir,
        api_keys=load_keys(keys_file, os.environ.get(KEYS_ENV)),
        url_signing_secret=os.environ.get(SECRET_ENV) or None,  # shared by replicas behind one address
        **settings,
    )
    return TinkerService(engine, config)


def serve(service: TinkerService, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs the server until interrupted. Refuses to listen beyond loopback without API keys."""
    import uvicorn

    if service.tenants.open_mode and not _is_loopback(host):
        raise SystemExit(f"refusing to listen on {host} without API keys: pass --keys-file or set {KEYS_ENV}")
    if service.tenants.open_mode:
        log.warning("no API keys configured: every tml- key is accepted as a tenant of its own "
                    "(loopback only)")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
