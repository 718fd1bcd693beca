"""What a model artifact holds (``kubetune-model.json``) and how a step's results land on KFP artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_INFO = "kubetune-model.json"  # in every model artifact: what it is and where its state lives


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_INFO
    if not path.is_file():
        raise ValueError(f"{model_dir} is not a kubetune model artifact (no {MODEL_INFO}); "
                         "pass the output of prepare_base_model or of a training step")
    return json.loads(path.read_text())


def record_training(info: dict[str, Any], model, metrics) -> str:
    """Copies a training step's results onto its KFP artifacts (``Output[Model]``,
    ``Output[Metrics]``); returns the final state's tinker path."""
    model.metadata.update({k: info[k] for k in ("recipe", "base_model", "state_path", "sampler_path")
                           if info.get(k)})
    model.metadata["framework"] = "peft"
    if info.get("reused_from"):
        model.metadata["reused_from"] = info["reused_from"]
    metrics.log_metric("train_seconds", float(info["seconds"]))
    metrics.log_metric("steps", float(info["steps"]))
    for split, report in (info.get("eval") or {}).items():
        metrics.log_metric(f"{split}/accuracy", float(report["accuracy"]))
        metrics.log_metric(f"{split}/valid_sql", float(report["valid_sql"]))
    return info["state_path"]
