"""`kubetune train ppo|dpo`: wrong settings are usage errors that say what to change, before any work."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kubetune.cli import app


def test_wrong_recipe_settings_are_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    ppo = runner.invoke(app, ["train", "ppo", "--data", str(tmp_path / "data"), "--reward", "accuracy"])
    assert ppo.exit_code == 2
    assert "reward must be one of execution, format, shaped" in " ".join(ppo.output.split())
    dpo = runner.invoke(app, ["train", "dpo", "--data", str(tmp_path / "data"), "--reference", "teacher"])
    assert dpo.exit_code == 2
    assert "reference must be 'snapshot' or 'base'" in " ".join(dpo.output.split())
    assert not (tmp_path / "data").exists()  # rejected before building anything
