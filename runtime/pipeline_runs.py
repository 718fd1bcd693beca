"""Compile the pipelines to YAML, and run one on this machine through kfp.local."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

_CASTS = {"Integer": int, "Float": float, "String": str, "Boolean": lambda v: v.lower() in ("1", "true", "yes"),
          "List": json.loads, "Dict": json.loads}


def compile_pipelines(out_dir: str | Path, gpu: bool = True) -> list[Path]:
    """Every pipeline to ``<out_dir>/<name>.yaml`` (what the Kubeflow UI uploads)."""
    from kfp import compiler

    from kubetune.pipelines import ClusterSettings, build_pipelines

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in build_pipelines(ClusterSettings(gpu=gpu)).items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        paths.append(path)
    return paths


COMPONENT_YAML_DIR = Path(__file__).resolve().parents[1] / "components" / "yaml"


def compile_components(out_dir: str | Path = COMPONENT_YAML_DIR) -> list[Path]:
    """Every component to ``<out_dir>/<name>.yaml``, for ``kfp.components.load_component_from_file``."""
    from kfp import compiler

    import kubetune.components as components

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sorted(n for n in components.__all__ if n != "KUBETUNE_IMAGE"):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(getattr(components, name), str(path))
        paths.append(path)
    return paths


def parse_params(pipeline, pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → typed pipeline arguments, with a clear error for unknown names or bad values."""
    inputs = pipeline.component_spec.inputs or {}
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: write it as name=value")
        if name not in inputs:
            raise ValueError(f"--param {name!r}: {pipeline.name} has no such parameter; it takes {', '.join(sorted(inputs))}")
        kind = inputs[name].type
        try:
            params[name] = _CASTS.get(kind, str)(value)
        except ValueError:  # json.JSONDecodeError is one too
            raise ValueError(f"--param {name}={value!r}: not a valid {kind}" +
                             (" (write JSON, e.g. '[{\"run_name\": \"a\", ...}]')" if kind in ("List", "Dict") else "")) from None
    return params


def run_local(name: str, params: dict[str, Any], runs_dir: str | Path = "runs") -> dict[str, Any]:
    """Runs pipeline ``name`` with kfp.local's SubprocessRunner in this environment; outputs under
    ``<runs_dir>/kfp``, MLflow (unless ``mlflow_tracking_uri`` is given) in ``<runs_dir>/mlflow``."""
    from kfp import local

    from kubetune.pipelines import PIPELINES

    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(sorted(PIPELINES))}")
    runs_dir = Path(runs_dir).resolve()
    params = dict(params)
    if "mlflow_tracking_uri" in (PIPELINES[name].component_spec.inputs or {}):
        params.setdefault("mlflow_tracking_uri", str(runs_dir / "mlflow"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(runs_dir / "kfp"),
               workspace_root=str(runs_dir / "kfp-workspace"))
    started = time.perf_counter()
    task = PIPELINES[name](**params)
    return {"output": task.output, "seconds": round(time.perf_counter() - started, 1),
            "pipeline_root": str(runs_dir / "kfp"), "mlflow": params.get("mlflow_tracking_uri")}
