"""Run a pipeline on this machine through kfp.local, with one shared training server for its steps."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def run_local(name: str, params: dict[str, Any], runs_dir: str | Path = "runs", shared_server: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs pipeline ``name`` with kfp.local's SubprocessRunner in this environment; outputs under
    ``<runs_dir>/kfp``, MLflow (unless ``mlflow_tracking_uri`` is given) in ``<runs_dir>/mlflow``.

    ``shared_server`` (when no ``training_api_url`` is given) starts one training server here for the
    run's base model and points every training step at it, as a cluster's shared server would be:
    the steps are packed onto one engine instead of each loading the model and competing for cores.
    """
    from . import PIPELINES

    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(sorted(PIPELINES))}")
    runs_dir = Path(runs_dir).resolve()
    params = dict(params)
    inputs = PIPELINES[name].component_spec.inputs or {}
    if "mlflow_tracking_uri" in inputs:
        params.setdefault("mlflow_tracking_uri", str(runs_dir / "mlflow"))
    if shared_server and "training_api_url" in inputs and not params.get("training_api_url"):
        with local_training_server(runs_dir, _default(inputs, params, "base_model"),
                                   _default(inputs, params, "seed"),
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
    from kubetune.api.embedded import embedded_server
    from kubetune.models.reference import TINY_REFS
    from kubetune.steps.model import prepare_model

    if base_model in TINY_REFS:
        log("building the tiny base model (about a minute the first time)")
        info = prepare_model(runs_dir / "base-model", base_model, seed=seed,
                             pretrain_steps=None if pretrain_steps < 0 else pretrain_steps)
        base_model = info["base_model"]
    with embedded_server(base_model, checkpoint_dir=runs_dir / "server-checkpoints") as server:
        log(f"training server {server.url} serving {server.model_name} "
            f"(checkpoints in {runs_dir / 'server-checkpoints'})")
        yield server.url, server.model_name


def _run(name: str, params: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
    from kfp import local

    from . import PIPELINES

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
