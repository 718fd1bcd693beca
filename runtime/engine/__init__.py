"""The infrastructure side: one base model, many LoRA jobs, Tinker's primitives."""

from .adapters import LoraSpec
from .engine import Engine, PreparedBatch
from .errors import EngineError, UnknownModelError, UserError
from .losses import LOSSES, get_loss

__all__ = ["LOSSES", "Engine", "EngineError", "LoraSpec", "PreparedBatch", "UnknownModelError", "UserError", "get_loss"]
