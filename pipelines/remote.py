"""Send a pipeline to a Kubeflow Pipelines backend: one run now, or a recurring run on a cron schedule.

Both compile the pipeline with this checkout's components and cluster settings, so what runs is
what ``kubetune pipelines compile`` writes. A schedule needs a stored pipeline *version* (the KFP
API takes ``version_id`` with ``pipeline_id``): the pipeline is uploaded once under its name, and
each distinct compiled YAML becomes a version named by its content hash, so scheduling the same
code twice reuses the version instead of piling up duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "kubetune"


@dataclass
class RemoteTarget:
    """Where and as whom to talk to the KFP API."""

    host: str  # e.g. http://localhost:8080 (port-forwarded ml-pipeline-ui) or https://<kubeflow>/pipeline
    token: str | None = None  # bearer token (e.g. `gcloud auth print-access-token`)
    namespace: str | None = None  # multi-user Kubeflow: the profile namespace
    gpu: bool = True  # compile with the GPU node pool settings, or the CPU-cluster variant


def validate_cron(cron: str) -> str:
    """KFP schedules take 6 fields (seconds first); a 5-field crontab line is the usual mistake."""
    fields = cron.split()
    if len(fields) != 6:
        hint = f" (did you mean '0 {cron.strip()}'?)" if len(fields) == 5 else ""
        raise ValueError(f"cron {cron!r} has {len(fields)} fields; KFP needs 6: second minute hour "
                         f"day-of-month month day-of-week, e.g. '0 0 2 * * *' for 02:00 daily{hint}")
    return " ".join(fields)


def compile_pipeline(name: str, out_dir: Path, gpu: bool) -> tuple[Path, str]:
    """Pipeline ``name`` to ``<out_dir>/<name>.yaml`` with the cluster settings of ``gpu``; returns the
    path and the pipeline's display name (``kubetune-...``, what the Kubeflow UI lists)."""
    from kfp import compiler

    from . import ClusterSettings, build_pipelines

    pipelines = build_pipelines(ClusterSettings(gpu=gpu))
    if name not in pipelines:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(sorted(pipelines))}")
    path = out_dir / f"{name}.yaml"
    compiler.Compiler().compile(pipelines[name], str(path))
    return path, pipelines[name].name


def _client(target: RemoteTarget):
    import kfp

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        kwargs = {"namespace": target.namespace} if target.namespace else {}
        return kfp.Client(host=target.host, existing_token=target.token, **kwargs)


def _quiet(call, *args, **kwargs):
    """kfp's client prints UI links itself; the CLI prints its own summary instead."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args, **kwargs)


def _experiment_id(client, name: str, namespace: str | None) -> str:
    return _quiet(client.create_experiment, name=name, namespace=namespace).experiment_id


def submit(name: str, target: RemoteTarget, params: dict[str, Any], experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None) -> dict[str, str]:
    """One run of pipeline ``name`` from its freshly compiled spec; returns run id and UI link."""
    client = _client(target)
    with tempfile.TemporaryDirectory() as tmp:
        package, _ = compile_pipeline(name, Path(tmp), target.gpu)
        experiment_id = _experiment_id(client, experiment, target.namespace)
        run = _quiet(client.run_pipeline, experiment_id=experiment_id, job_name=run_name or name,
                     pipeline_package_path=str(package), params=params)
    return {"run_id": run.run_id, "experiment_id": experiment_id,
            "url": f"{client._get_url_prefix()}/#/runs/details/{run.run_id}"}


def _pipeline_version(client, name: str, package: Path, namespace: str | None) -> tuple[str, str]:
    """(pipeline_id, version_id) of this exact compiled YAML, uploading what is missing."""
    version_name = f"{name}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline = _quiet(client.upload_pipeline, str(package), pipeline_name=name, namespace=namespace,
                          description=f"{name}, uploaded by kubetune schedule")
        pipeline_id = pipeline.pipeline_id
        # The upload stores the YAML as the pipeline's first version; rename-free lookup by listing.
        versions = client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=1).pipeline_versions or []
        if not versions:
            raise RuntimeError(f"KFP stored pipeline {pipeline_id} without a version; upload it again")
        return pipeline_id, versions[0].pipeline_version_id
    same = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                       "stringValue": version_name}]})
    found = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=same).pipeline_versions or []
    if found:
        return pipeline_id, found[0].pipeline_version_id
    version = _quiet(client.upload_pipeline_version, str(package), pipeline_version_name=version_name,
                     pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def schedule(name: str, target: RemoteTarget, cron: str, params: dict[str, Any],
             experiment: str = DEFAULT_EXPERIMENT, job_name: str | None = None,
             max_concurrency: int = 1) -> dict[str, str]:
    """A recurring run of pipeline ``name`` on ``cron`` (6 fields); returns its ids and UI link.

    Missed intervals are not back-filled (``no_catchup``): a sweep that was paused should run once,
    not once per missed night.
    """
    cron = validate_cron(cron)
    client = _client(target)
    with tempfile.TemporaryDirectory() as tmp:
        package, display_name = compile_pipeline(name, Path(tmp), target.gpu)
        pipeline_id, version_id = _pipeline_version(client, display_name, package, target.namespace)
    experiment_id = _experiment_id(client, experiment, target.namespace)
    job = client.create_recurring_run(experiment_id=experiment_id, job_name=job_name or f"{name} ({cron})",
                                      cron_expression=cron, params=params, pipeline_id=pipeline_id,
                                      version_id=version_id, max_concurrency=max_concurrency, no_catchup=True)
    return {"recurring_run_id": job.recurring_run_id, "pipeline_id": pipeline_id, "version_id": version_id,
            "experiment_id": experiment_id,
            "url": f"{client._get_url_prefix()}/#/recurringrun/details/{job.recurring_run_id}"}
