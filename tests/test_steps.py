"""Pipeline steps: model artifacts by reference, and clear errors for wrong inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.steps import MODEL_INFO, prepare_data, prepare_model, read_model_info, train


def test_a_real_model_is_recorded_by_reference_not_downloaded(tmp_path: Path) -> None:
    info = prepare_model(tmp_path / "m", reference="google/gemma-3-1b-it")
    assert info == {"kind": "base", "base_model": "google/gemma-3-1b-it"}
    assert json.loads((tmp_path / "m" / MODEL_INFO).read_text()) == info
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MODEL_INFO]


def test_wrong_inputs_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a kubetune model artifact"):
        read_model_info(tmp_path)
    with pytest.raises(ValueError, match="unknown recipe 'grpo'; choose one of sft, ppo, dpo"):
        train("grpo", tmp_path, tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="neither 'embedded' nor a Spider-format directory"):
        prepare_data(tmp_path / "data", source=str(tmp_path / "missing"))
