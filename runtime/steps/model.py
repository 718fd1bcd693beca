"""The base-model step: bootstrap the embedded tiny model, or record a real model by reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.bootstrap import bootstrap_tiny_model
from ..models.reference import TINY_REFS
from ..tasks.text2sql import pretraining_corpus
from .artifacts import MODEL_INFO


def prepare_model(out_dir: str | Path, reference: str = "tiny", seed: int = 0,
                  pretrain_steps: int | None = None) -> dict[str, Any]:
    """``tiny``: bootstrap the embedded model (pretrained on the task's corpus) into ``out_dir``.
    Anything else (a Hub id, a local directory) is recorded by reference only; the training server
    loads it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if reference in TINY_REFS:
        extra = {"steps": pretrain_steps} if pretrain_steps is not None else {}
        boot = bootstrap_tiny_model(out_dir, pretraining_corpus(seed), seed=seed, **extra)
        # "reference": what a shared training server knows this model as (it built its own copy).
        info = {"kind": "base", "base_model": str(out_dir), "reference": reference, "params": boot.params,
                "pretrain_steps": boot.steps}
    else:
        info = {"kind": "base", "base_model": reference}
    (out_dir / MODEL_INFO).write_text(json.dumps(info, indent=2))
    return info
