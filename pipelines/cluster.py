"""Kubernetes settings of pipeline steps (kfp-kubernetes): ignored by kfp.local, present in the
compiled YAML for a Kubeflow cluster."""

from dataclasses import dataclass

from kfp import kubernetes
from kfp.dsl import PipelineTask

from kubetune.components import KUBETUNE_IMAGE


@dataclass(frozen=True)
class ClusterSettings:
    """Where training runs on a cluster. The defaults target a GKE pool of one NVIDIA L4 per pod;
    ``gpu=False`` compiles pipelines for CPU-only clusters."""

    gpu: bool = True
    accelerator: str = "nvidia.com/gpu"
    gpu_node_label: tuple[str, str] = ("cloud.google.com/gke-accelerator", "nvidia-l4")
    gpu_taint_key: str = "nvidia.com/gpu"  # GPU pools are tainted; training steps tolerate it
    cache_pvc: str = "kubetune-cache"  # model and dataset caches (KUBETUNE_HOME) shared by steps
    cache_mount: str = "/mnt/kubetune"
    api_key_secret: str = "kubetune-api-key"  # key `api-key` -> TINKER_API_KEY
    mlflow_secret: str = "kubetune-mlflow"  # keys `username`, `password` -> MLFLOW_TRACKING_*
    retries: int = 2  # steps that talk to services (training server, MLflow)
    gpu_image: str = f"{KUBETUNE_IMAGE}-cuda"  # images/Dockerfile.cuda: steps given a GPU need CUDA torch


def training_step(task: PipelineTask, settings: ClusterSettings) -> PipelineTask:
    """A step that trains: no caching, a GPU (when asked), the API key, the cache volume, retries."""
    task.set_caching_options(False)
    return evaluation_step(task, settings)


def evaluation_step(task: PipelineTask, settings: ClusterSettings) -> PipelineTask:
    """A step that runs the model (here, or on the training server): a GPU (when asked), the API key,
    the cache volume, retries. Caching stays on: the same model and data give the same accuracy."""
    if settings.gpu:
        task.set_container_image(settings.gpu_image)
        task.set_accelerator_type(settings.accelerator).set_accelerator_limit(1)
        kubernetes.add_node_selector(task, *settings.gpu_node_label)
        kubernetes.add_toleration(task, key=settings.gpu_taint_key, operator="Exists", effect="NoSchedule")
    kubernetes.use_secret_as_env(task, settings.api_key_secret, {"api-key": "TINKER_API_KEY"}, optional=True)
    cache_step(task, settings)
    task.set_retry(settings.retries, backoff_duration="30s", backoff_factor=2.0)
    return task


def cache_step(task: PipelineTask, settings: ClusterSettings) -> PipelineTask:
    """A step that reads or writes kubetune's caches (models, datasets) on the shared volume."""
    kubernetes.mount_pvc(task, settings.cache_pvc, settings.cache_mount)
    task.set_env_variable("KUBETUNE_HOME", settings.cache_mount)
    task.set_env_variable("HF_HOME", f"{settings.cache_mount}/huggingface")  # real models download once
    return task


def tracking_step(task: PipelineTask, settings: ClusterSettings) -> PipelineTask:
    """A step that talks to MLflow: its credentials (optional secret), retries, and no caching (a
    re-run logs again)."""
    task.set_caching_options(False)
    kubernetes.use_secret_as_env(task, settings.mlflow_secret,
                                 {"username": "MLFLOW_TRACKING_USERNAME",
                                  "password": "MLFLOW_TRACKING_PASSWORD"},
                                 optional=True)
    task.set_retry(settings.retries, backoff_duration="30s", backoff_factor=2.0)
    return task
