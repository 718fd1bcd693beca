"""On-disk formats of the engine's checkpoints.

Training state (``save_state``), one directory::

    kubetune_state.json     format, model id, base model, LoRA spec, step, tokens trained
    adapter.safetensors     the job's LoRA tensors, keyed by module name (adapter name removed)
    optimizer.pt            AdamW state dict (absent when saved without optimizer)
    rng.pt                  the job's sampling generator state

Sampler weights (``save_weights_for_sampler``): a plain PEFT adapter directory,
``adapter_config.json`` + ``adapter_model.safetensors``, that ``PeftModel.from_pretrained`` and
vLLM's ``--lora-modules`` load unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_directory

STATE_FORMAT = "kubetune-training-state/1"
STATE_FILE = "kubetune_state.json"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


@dataclass
class TrainingState:
    """Everything a job needs to continue exactly where it stopped."""

    model_id: str
    base_model: str
    lora: dict[str, Any]
    step: int
    tokens_trained: int
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    rng: torch.Tensor | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def write_state(path: str | Path, state: TrainingState) -> Path:
    """Writes ``state`` atomically to the directory ``path`` (replacing an older one)."""
    header = {
        "format": STATE_FORMAT,
        "model_id": state.model_id,
        "base_model": state.base_model,
        "lora": state.lora,
        "step": state.step,
        "tokens_trained": state.tokens_trained,
        "has_optimizer": state.optimizer is not None,
        "metadata": state.metadata,
    }
    with atomic_directory(path) as staging:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.adapter.items()},
                  staging / ADAPTER_FILE)
        if state.optimizer is not None:
            torch.save(state.optimizer, staging / OPTIMIZER_FILE)
        if state.rng is not None:
            torch.save(state.rng, staging / RNG_FILE)
        (staging / STATE_FILE).write_text(json.dumps(header, indent=2, sort_keys=True))
    return Path(path)


def read_state(path: str | Path, *, with_optimizer: bool = True) -> TrainingState:
    """Reads a directory written by :func:`write_state`; clear errors for anything else."""
    path = Path(path)
    header_path = path / STATE_FILE
    if not header_path.is_file():
        raise FileNotFoundError(
            f"{path} is not a kubetune training checkpoint (no {STATE_FILE}); "
            "pass a path written by save_state"
        )
    header = json.loads(header_path.read_text())
    if header.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} has checkpoint format {header.get('format')!r}; "
                         f"this version reads {STATE_FORMAT}")
    optimizer = None
    if with_optimizer:
        if not header["has_optimizer"]:
            raise ValueError(f"{path} was saved without optimizer state; load it without the optimizer")
        optimizer = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    rng_path = path / RNG_FILE
    return TrainingState(
        model_id=header["model_id"],
        base_model=header["base_model"],
        lora=header["lora"],
        step=int(header["step"]),
        tokens_trained=int(header["tokens_trained"]),
        adapter=load_file(path / ADAPTER_FILE),
        optimizer=optimizer,
        rng=torch.load(rng_path, weights_only=True) if rng_path.exists() else None,
        metadata=header.get("metadata", {}),
    )


def write_sampler_weights(path: str | Path, adapter: dict[str, torch.Tensor], peft_config: Any) -> Path:
    """Writes a standard PEFT adapter directory atomically."""
    with atomic_directory(path) as staging:
        peft_config.save_pretrained(str(staging))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in adapter.items()},
            staging / "adapter_model.safetensors",
            metadata={"format": "pt"},
        )
    return Path(path)


def read_sampler_config(path: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a sampler-weights directory."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} is not a PEFT adapter directory (no adapter_config.json)")
    return json.loads(config.read_text())


def lora_dict(spec: Any) -> dict[str, Any]:
    """A LoraSpec as plain JSON."""
    return asdict(spec)
