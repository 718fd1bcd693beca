"""MLflow tracking: a local store by default (``runs/mlflow``, which ``mlflow ui`` opens), any
tracking server on a cluster (``http(s)://…``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_LOCAL_STORE = Path("runs") / "mlflow"


def resolve_tracking_uri(uri: str = "") -> str:
    """``""`` or a directory → a SQLite store in that directory (default ``runs/mlflow``); a URI
    (``http://``, ``https://``, ``sqlite://``, ``databricks``…) → unchanged."""
    if "://" in uri or uri == "databricks":
        return uri
    directory = Path(uri or DEFAULT_LOCAL_STORE).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'mlflow.db'}"


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
            tags: dict[str, str] | None = None) -> str:
    """One MLflow run (a child of ``parent_run_id`` if given) with params, metrics and artifact
    directories (``{artifact_path: local_dir}``); ``register_as`` registers the ``adapter``
    artifact in the model registry. Returns the run id."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment_id(mlflow, experiment, uri)
    run_tags = dict(tags or {})
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    client = mlflow.MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        for key, value in (params or {}).items():
            client.log_param(run_id, key, value if isinstance(value, str | int | float | bool) else json.dumps(value))
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, float(value))
        for path, local in (artifacts or {}).items():
            if Path(local).is_dir():
                client.log_artifacts(run_id, str(local), artifact_path=path)
            elif Path(local).is_file():
                client.log_artifact(run_id, str(local), artifact_path=path)
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
        client.create_registered_model(name, description="LoRA adapters trained by kubetune (PEFT directories)")
    source = f"{client.get_run(run_id).info.artifact_uri}/adapter"
    return client.create_model_version(name, source=source, run_id=run_id,
                                       tags={"format": "peft-adapter"}).version
