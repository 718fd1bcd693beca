"""MLflow tracking: a local store by default (``runs/mlflow``, which ``mlflow ui`` opens), any
tracking server on a cluster (``http(s)://…``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..checkpoint.lock import exclusive

DEFAULT_LOCAL_STORE = Path("runs") / "mlflow"


def resolve_tracking_uri(uri: str = "") -> str:
    """``""`` or a directory → a SQLite store in that directory (default ``runs/mlflow``); a URI
    (``http://``, ``https://``, ``sqlite://``, ``databricks``…) → unchanged."""
    if "://" in uri or uri == "databricks":
        return uri
    directory = Path(uri or DEFAULT_LOCAL_STORE).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'mlflow.db'}"


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialises first-time set-up of a local SQLite store: parallel pipeline steps creating its
    tables or the same experiment at once otherwise fail ("table experiments already exists")."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    with exclusive(Path(tracking_uri.removeprefix("sqlite:///")).with_suffix(".lock")):
        yield


def _experiment_id(mlflow, name: str, tracking_uri: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if tracking_uri.startswith("sqlite:///"):  # keep artifacts next to the local store, not in the cwd
        artifacts = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifacts)


def log_run(tracking_uri: str, experiment: str, run_name: str, *, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None, artifacts: dict[str, str | Path] | None = None,
            parent_run_id: str | None = None, register_as: str | None = None,
            tags: dict[str, str] | None = None, texts: dict[str, str] | None = None,
            run_id: str | None = None) -> str:
    """One MLflow run (a child of ``parent_run_id`` if given) with params, metrics, artifacts
    (``{artifact_path: local dir or file}``, ``""`` for the root) and text files; ``register_as``
    registers the ``adapter`` artifact in the model registry. With ``run_id``, logs into that
    existing run instead (new param names only: MLflow params are write-once). Returns the run id."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        experiment_id = _experiment_id(mlflow, experiment, uri)
    run_tags = dict(tags or {})
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    client = mlflow.MlflowClient(uri)
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id
    else:
        for key, value in run_tags.items():
            client.set_tag(run_id, key, value)
    try:
        for key, value in (params or {}).items():
            client.log_param(run_id, key,
                             value if isinstance(value, str | int | float | bool) else json.dumps(value))
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, float(value))
        for path, local in (artifacts or {}).items():
            if Path(local).is_dir():
                client.log_artifacts(run_id, str(local), artifact_path=path or None)
            elif Path(local).is_file():
                client.log_artifact(run_id, str(local), artifact_path=path or None)
        for name, text in (texts or {}).items():
            client.log_text(run_id, text, name)
        if register_as:
            register_adapter(client, register_as, run_id)
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def register_adapter(client, name: str, run_id: str) -> str:
    """Registers a run's ``adapter`` artifact directory (a PEFT adapter, not an MLflow model
    flavour) as a new version of ``name``; returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name,
                                       description="LoRA adapters trained by kubetune (PEFT directories)")
    source = f"{client.get_run(run_id).info.artifact_uri}/adapter"
    return client.create_model_version(name, source=source, run_id=run_id,
                                       tags={"format": "peft-adapter"}).version


def set_parent(tracking_uri: str, run_ids: list[str], parent_run_id: str) -> None:
    """Makes existing runs children of ``parent_run_id`` (how the MLflow UI nests them)."""
    import mlflow

    client = mlflow.MlflowClient(resolve_tracking_uri(tracking_uri))
    for run_id in run_ids:
        client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
