"""`kubetune pipelines compile` and `kubetune run --local` argument handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.pipelines import PIPELINES
from kubetune.pipelines.compile import parse_params


def test_compile_writes_every_pipeline_and_the_cpu_variant(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["pipelines", "compile", "--out", str(tmp_path / "gpu")]).exit_code == 0
    assert runner.invoke(app, ["pipelines", "compile", "--out", str(tmp_path / "cpu"),
                               "--no-gpu"]).exit_code == 0
    for name in PIPELINES:
        gpu = list(yaml.safe_load_all((tmp_path / "gpu" / f"{name}.yaml").read_text()))
        cpu = list(yaml.safe_load_all((tmp_path / "cpu" / f"{name}.yaml").read_text()))
        gpu_sft = gpu[0]["deploymentSpec"]["executors"]["exec-train-sft"]["container"]
        cpu_sft = cpu[0]["deploymentSpec"]["executors"]["exec-train-sft"]["container"]
        assert "accelerator" in gpu_sft["resources"]
        assert "resources" not in cpu_sft


def test_params_are_typed_by_the_pipeline_signature() -> None:
    params = parse_params(PIPELINES["rl_finetune"], ["sft_steps=3", "kl_coef=0.05", "reward=shaped"])
    assert params == {"sft_steps": 3, "kl_coef": 0.05, "reward": "shaped"}
    with pytest.raises(ValueError, match="has no such parameter; it takes .*sft_steps"):
        parse_params(PIPELINES["rl_finetune"], ["sft_stepz=3"])
    with pytest.raises(ValueError, match="not a valid Integer"):
        parse_params(PIPELINES["rl_finetune"], ["sft_steps=abc"])
    experiments = parse_params(PIPELINES["autoresearch"], ['experiments=[{"run_name": "a", "lora_rank": 4}]'])
    assert experiments == {"experiments": [{"run_name": "a", "lora_rank": 4}]}
    with pytest.raises(ValueError, match="not a valid List"):
        parse_params(PIPELINES["autoresearch"], ["experiments=a,b"])
    with pytest.raises(ValueError, match="write it as name=value"):
        parse_params(PIPELINES["rl_finetune"], ["sft_steps"])


def plain(output: str) -> str:
    """CLI output without rich's box drawing and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_run_without_local_or_with_an_unknown_pipeline_is_a_usage_error() -> None:
    runner = CliRunner()
    remote = runner.invoke(app, ["run", "rl_finetune"])
    assert remote.exit_code == 2 and "kubetune submit PIPELINE --host URL" in plain(remote.output)
    unknown = runner.invoke(app, ["run", "grpo_finetune", "--local"])
    assert unknown.exit_code == 2
    assert "choose one of autoresearch, dpo_finetune, rl_finetune" in plain(unknown.output)


def test_committed_component_yamls_are_current(tmp_path: Path) -> None:
    """components/yaml is what `kubetune pipelines components` writes today; rerun it after changing a
    component."""
    from kfp import components

    from kubetune.pipelines.compile import COMPONENT_YAML_DIR, compile_components

    fresh = compile_components(tmp_path)
    committed = sorted(COMPONENT_YAML_DIR.glob("*.yaml"))
    assert [p.name for p in committed] == [p.name for p in fresh]
    for new in fresh:
        old = COMPONENT_YAML_DIR / new.name
        assert old.read_text() == new.read_text(), f"{old} is stale: run `kubetune pipelines components`"
        assert components.load_component_from_file(str(old)).name == new.stem.replace("_", "-")
