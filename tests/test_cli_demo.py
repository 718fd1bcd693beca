"""The command line and the embedded demo, end to end at toy sizes."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.demo import DemoConfig, run_demo
from kubetune.tasks.text2sql import load_split


def test_data_build_prints_statistics(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "build", "--out", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "heldout_database" in result.output and "train" in result.output
    assert len(load_split(tmp_path / "data", "train")) == 800


def test_relative_data_dir_works(tmp_path: Path, monkeypatch) -> None:
    """`make demo` passes relative paths (runs/demo): building and reading prompts must accept them."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["data", "build", "--out", "rel/data"])
    assert result.exit_code == 0, result.output
    example = load_split(Path("rel/data"), "train")[0]
    assert example.prompt("rel/data").startswith("CREATE TABLE")


def test_cli_reports_bad_usage() -> None:
    result = CliRunner().invoke(app, ["model", "bootstrap"])
    assert result.exit_code != 0
    assert "--out" in result.output


def test_demo_runs_end_to_end_at_toy_size(tmp_path: Path) -> None:
    config = DemoConfig(workdir=tmp_path, sft_steps=4, batch_size=4, eval_examples=3, pretrain_steps=3)
    summary = run_demo(config, Console(file=open(tmp_path / "log.txt", "w")))  # noqa: SIM115
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["accuracy_after"] == summary["accuracy_after"]
    assert set(summary["accuracy_before"]) == {"heldout_values", "heldout_paraphrase", "heldout_database"}
    assert all(0.0 <= v <= 1.0 for v in summary["accuracy_after"].values())
    assert summary["sft"]["steps"] == 4 and summary["base_model"]["params"] > 0
    assert (Path(summary["adapter"]) / "adapter_config.json").is_file()
    assert "held-out execution accuracy" in (tmp_path / "log.txt").read_text()
