"""Durable checkpoints: training state (adapter + optimizer + RNG + step) and sampler weights."""

from .atomic import atomic_directory
from .state import (
    STATE_FORMAT,
    TrainingState,
    read_sampler_config,
    read_state,
    write_sampler_weights,
    write_state,
)

__all__ = [
    "STATE_FORMAT",
    "TrainingState",
    "atomic_directory",
    "read_sampler_config",
    "read_state",
    "write_sampler_weights",
    "write_state",
]
