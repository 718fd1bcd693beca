"""Pipelines compile to YAML that kfp loads back, and rl_finetune runs end to end under kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler, components, local

from kubetune.pipelines import PIPELINES

TINY_SIZES = json.dumps({"train": 16, "rl": 8, "heldout_values": 4, "heldout_paraphrase": 4, "heldout_database": 4})


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_compiles_and_loads_back(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(PIPELINES[name], str(path))
    loaded = components.load_component_from_file(str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    assert loaded.name == spec["pipelineInfo"]["name"]
    for component in spec["components"].values():  # every parameter carries its docstring description
        for param, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            assert definition.get("description"), f"{name}: {param} has no description"
    executors = spec["deploymentSpec"]["executors"].values()
    assert all(e["container"]["image"].startswith("ghcr.io/kubetune/kubetune") for e in executors)
    assert all("pip install" not in " ".join(e["container"]["command"]) for e in executors)


def test_rl_finetune_runs_locally(tmp_path: Path) -> None:
    """prepare data → base model → SFT → PPO → evaluate through kfp's SubprocessRunner, tiny sizes."""
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(tmp_path / "workspace"))
    store = tmp_path / "mlflow"
    task = PIPELINES["rl_finetune"](data_sizes_json=TINY_SIZES, pretrain_steps=2, sft_steps=2, ppo_steps=1,
                                    prompts_per_step=2, group_size=2, eval_examples=2,
                                    mlflow_tracking_uri=str(store), register_name="kubetune-test")
    assert 0.0 <= task.output <= 1.0
    (run,) = root.iterdir()
    sft_info = json.loads((run / "train-sft" / "model" / "kubetune-model.json").read_text())
    ppo_info = json.loads((run / "train-ppo" / "model" / "kubetune-model.json").read_text())
    assert sft_info["recipe"] == "sft" and ppo_info["recipe"] == "ppo"
    assert ppo_info["state_path"].startswith("tinker://") and ppo_info["steps"] == 1
    assert ppo_info["base_model"] == sft_info["base_model"] == str(run / "prepare-base-model" / "model")
    assert (run / "train-ppo" / "model" / "adapter" / "adapter_config.json").is_file()
    ppo_log = [json.loads(line) for line in (run / "train-ppo" / "model" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in ppo_log] == [0]
    report = (run / "evaluate-text2sql" / "report").read_text()
    assert "| heldout_paraphrase | 2 |" in report
    ppo_config = json.loads((run / "train-ppo" / "model" / "run" / "result.json").read_text())["config"]
    assert ppo_config["init_state"] == sft_info["state_path"]  # PPO continued from the SFT artifact's state


    # The MLflow run, read back from the local store the pipeline wrote.
    import mlflow

    from kubetune.tracking import resolve_tracking_uri

    client = mlflow.MlflowClient(resolve_tracking_uri(str(store)))
    (experiment,) = [e for e in client.search_experiments() if e.name == "kubetune-text2sql"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_name == "rl_finetune" and mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["recipe"] == "ppo" and mlflow_run.data.params["steps"] == "1"
    assert mlflow_run.data.metrics["heldout_paraphrase/accuracy"] == pytest.approx(task.output)
    assert mlflow_run.data.metrics["train/steps"] == 1.0
    assert "adapter/adapter_config.json" in [a.path for a in client.list_artifacts(mlflow_run.info.run_id, "adapter")]
    (version,) = client.search_model_versions("name='kubetune-test'")
    assert version.run_id == mlflow_run.info.run_id


def _platform(name: str, tmp_path: Path, pipeline=None) -> dict:
    path = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(pipeline or PIPELINES[name], str(path))
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 2, "the Kubernetes platform spec is the second YAML document"
    return documents[0], documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize(("name", "trainer"), [("rl_finetune", "train-ppo"), ("dpo_finetune", "train-dpo")])
def test_compiled_yaml_holds_the_cluster_settings(name: str, trainer: str, tmp_path: Path) -> None:
    spec, executors = _platform(name, tmp_path)
    for step in ("exec-train-sft", f"exec-{trainer}"):
        config = executors[step]
        assert config["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert config["tolerations"][0]["key"] == "nvidia.com/gpu" and config["tolerations"][0]["effect"] == "NoSchedule"
        assert config["pvcMount"][0]["mountPath"] == "/mnt/kubetune"
        (secret,) = config["secretAsEnv"]
        assert secret["secretName"] == "kubetune-api-key" and secret["keyToEnv"][0]["envVar"] == "TINKER_API_KEY"
        resources = spec["deploymentSpec"]["executors"][step]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
    assert executors["exec-log-to-mlflow"]["secretAsEnv"][0]["secretName"] == "kubetune-mlflow"
    tasks = spec["root"]["dag"]["tasks"]
    for task in ("train-sft", trainer, "log-to-mlflow"):
        assert tasks[task]["retryPolicy"]["maxRetryCount"] == 2
    for task in ("train-sft", trainer, "log-to-mlflow"):
        assert tasks[task]["cachingOptions"] == {}  # caching off (kfp omits enableCache: false)


def test_cpu_cluster_variant_has_no_gpu_request(tmp_path: Path) -> None:
    from kubetune.pipelines import ClusterSettings, build_pipelines

    spec, executors = _platform("rl_finetune", tmp_path, build_pipelines(ClusterSettings(gpu=False))["rl_finetune"])
    assert "nodeSelector" not in executors["exec-train-sft"] and "tolerations" not in executors["exec-train-sft"]
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-train-sft"]["container"].get("resources", {})
    assert executors["exec-train-sft"]["pvcMount"][0]["mountPath"] == "/mnt/kubetune"
