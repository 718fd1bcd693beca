"""The infrastructure side: one base model, many LoRA jobs, Tinker's primitives."""

from ..errors import EngineError, UnknownModelError, UserError
from .adapters import LoraSpec
from .engine import Engine, PreparedBatch

__all__ = ["Engine", "EngineError", "LoraSpec", "PreparedBatch", "UnknownModelError", "UserError"]
