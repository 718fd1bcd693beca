"""The command line and the embedded demo, end to end at toy sizes."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.demo import run_sft_demo
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


def test_sft_demo_is_the_sft_recipe_with_accuracy_before_and_after(tmp_path: Path) -> None:
    """`kubetune demo --sft-only` and `kubetune train sft` with the same settings train the same
    adapter (same loss curve bit for bit) and report the same accuracy."""
    settings = {"steps": 4, "batch_size": 4, "eval_examples": 3, "max_length": 96}
    summary = run_sft_demo(tmp_path / "demo", settings, pretrain_steps=3,
                           console=Console(file=open(tmp_path / "log.txt", "w")))  # noqa: SIM115
    written = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert written["accuracy_after"] == summary["accuracy_after"]
    assert set(summary["accuracy_before"]) == {"heldout_values", "heldout_paraphrase", "heldout_database"}
    assert all(0.0 <= v <= 1.0 for v in summary["accuracy_after"].values())
    assert summary["sft"]["steps"] == 4 and summary["base_model"]["params"] > 0
    assert (Path(summary["adapter"]) / "adapter_config.json").is_file()
    assert "held-out execution accuracy" in (tmp_path / "log.txt").read_text()

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["train", "sft", "--data", str(tmp_path / "demo" / "data"),
                                      "--out", str(out),
                                      "--base-model", summary["base_model"]["path"], "--steps", "4",
                                      "--batch-size", "4", "--eval-examples", "3", "--max-length", "96"])
    assert result.exit_code == 0, result.output
    cli = json.loads((out / "result.json").read_text())
    assert {s: r["accuracy"] for s, r in cli["eval"].items()} == summary["accuracy_after"]
    demo_losses = [json.loads(line)["loss"] for line in (tmp_path / "demo" / "sft" / "metrics.jsonl").open()]
    cli_losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").open()]
    assert demo_losses == cli_losses and len(cli_losses) == 4
