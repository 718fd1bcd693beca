"""One LoRA adapter per training job: which layers it targets, and the state that travels with it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UserError

# Linear layers by role. Names are those of the Gemma / Llama / Qwen families in transformers.
ATTENTION_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LAYERS = ("gate_proj", "up_proj", "down_proj")
UNEMBED_LAYER = "lm_head"
# Multimodal checkpoints (Gemma 3 4B+) carry a vision tower whose layers the text jobs never train.
_SKIPPED_SUBTREES = ("vision_tower", "vision_model", "multi_modal_projector", "audio_tower")


@dataclass(frozen=True)
class LoraSpec:
    """What a job asked for at creation (Tinker's ``LoraConfig``)."""

    rank: int = 32
    seed: int | None = None
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True
    alpha: float | None = None  # scaling = alpha / rank; None means alpha = 32, as Tinker does

    def validate(self) -> None:
        if not 1 <= self.rank <= 1024:
            raise UserError(f"LoRA rank must be between 1 and 1024; got {self.rank}")
        if not (self.train_attn or self.train_mlp or self.train_unembed):
            raise UserError("LoRA config trains nothing: "
                            "set at least one of train_attn, train_mlp, train_unembed")


def linear_layers(model: nn.Module) -> dict[str, str]:
    """Maps the full name of every LoRA-able Linear layer to its role: ``attn``, ``mlp`` or ``unembed``.

    Read once from the bare model, before PEFT wraps the layers.
    """
    roles: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or any(part in name for part in _SKIPPED_SUBTREES):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ATTENTION_LAYERS:
            roles[name] = "attn"
        elif leaf in MLP_LAYERS:
            roles[name] = "mlp"
        elif leaf == UNEMBED_LAYER:
            roles[name] = "unembed"
    if not roles:
        raise UserError("the base model has no attention, MLP or lm_head Linear layers; "
                        "it is not a supported architecture")
    return roles


def target_modules(layers: dict[str, str], spec: LoraSpec) -> list[str]:
    """Full names of the layers ``spec`` trains, in module order."""
    wanted = {"attn": spec.train_attn, "mlp": spec.train_mlp, "unembed": spec.train_unembed}
    names = [name for name, role in layers.items() if wanted[role]]
    if not names:
        raise UserError(f"the base model has no layers for {spec}; enable train_attn or train_mlp")
    return names


@dataclass
class Job:
    """A training job: its adapter (named ``model_id`` inside the shared PeftModel) and optimizer."""

    model_id: str
    spec: LoraSpec
    params: list[nn.Parameter]
    optimizer: torch.optim.AdamW
    generator: torch.Generator  # sampling randomness when a request carries no seed
    step: int = 0
    tokens_trained: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)
