"""pick_device: best available device, overridable by KUBETUNE_DEVICE."""

from __future__ import annotations

import pytest
import torch

from kubetune.models.device import pick_device


def test_default_is_the_best_available(monkeypatch):
    monkeypatch.delenv("KUBETUNE_DEVICE", raising=False)
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert pick_device().type == expected


def test_env_override(monkeypatch):
    monkeypatch.setenv("KUBETUNE_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_env_override_rejects_unknown_device(monkeypatch):
    monkeypatch.setenv("KUBETUNE_DEVICE", "tpu-please")
    with pytest.raises(ValueError, match="KUBETUNE_DEVICE"):
        pick_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_env_override_rejects_absent_cuda(monkeypatch):
    monkeypatch.setenv("KUBETUNE_DEVICE", "cuda:1")
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device()
