"""Compile the pipelines to YAML, and run one on this machine through kfp.local."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def run_local(name: str, params: dict[str, Any], runs_dir: str | Path = "runs", shared_server: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs pipeline ``name`` with kfp.local's SubprocessRunner in this environment; outputs under
    ``<runs_dir>/kfp``, MLflow (unless ``mlflow_tracking_uri`` is given) in ``<runs_dir>/mlflow``.

    ``shared_server`` (when no ``training_api_url`` is given) starts one training server here for the
    run's base model and points every training step at it, as a cluster's shared server would be:
    the steps are packed onto one engine instead of each loading the model and competing for cores.
    """
    from kubetune.pipelines import PIPELINES

    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(sorted(PIPELINES))}")
    runs_dir = Path(runs_dir).resolve()
    params = dict(params)
    inputs = PIPELINES[name].component_spec.inputs or {}
    if "mlflow_tracking_uri" in inputs:
        params.setdefault("mlflow_tracking_uri", str(runs_dir / "mlflow"))
    if shared_server and "training_api_url" in inputs and not params.get("training_api_url"):
        with local_training_server(runs_dir, _default(inputs, params, "base_model"), _default(inputs, params, "seed"),
                                   _default(inputs, params, "pretrain_steps"), log) as (url, base_model):
            return _run(name, {**params, "training_api_url": url, "base_model": base_model}, runs_dir)
    return _run(name, params, runs_dir)


def _default(inputs: dict, params: dict[str, Any], key: str) -> Any:
    return params[key] if key in params else inputs[key].default


@contextmanager
def local_training_server(runs_dir: Path, base_model: str, seed: int, pretrain_steps: int,
                          log: Callable[[str], None] = print) -> Iterator[tuple[str, str]]:
    """A training server on a loopback port for ``base_model`` (``tiny``: built into
    ``<runs_dir>/base-model`` once, cached by content hash); yields its URL and the base model name
    the pipeline's steps must ask for."""
    from .api.embedded import embedded_server
    from .models.reference import TINY_REFS
    from .steps import prepare_model

    if base_model in TINY_REFS:
        log("building the tiny base model (about a minute the first time)")
        base_model = prepare_model(runs_dir / "base-model", base_model, seed=seed,
                                   pretrain_steps=None if pretrain_steps < 0 else pretrain_steps)["base_model"]
    with embedded_server(base_model, checkpoint_dir=runs_dir / "server-checkpoints") as server:
        log(f"training server {server.url} serving {server.model_name} (checkpoints in {runs_dir / 'server-checkpoints'})")
        yield server.url, server.model_name


def _run(name: str, params: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
    from kfp import local

    from kubetune.pipelines import PIPELINES

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(runs_dir / "kfp"),
               workspace_root=str(runs_dir / "kfp-workspace"))
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Said once per task: the image is ignored and so are the Kubernetes settings, by design here.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        task = PIPELINES[name](**params)
    return {"outputs": dict(task.outputs), "seconds": round(time.perf_counter() - started, 1),
            "pipeline_root": str(runs_dir / "kfp"), "mlflow": params.get("mlflow_tracking_uri")}
