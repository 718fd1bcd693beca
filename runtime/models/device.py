"""Which torch device to run on: the best one present, unless the environment says otherwise."""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "KUBETUNE_DEVICE"


def pick_device() -> torch.device:
    """Returns ``$KUBETUNE_DEVICE`` if set, else cuda if available, else mps if available, else cpu.

    The override exists so a GPU machine can still run the CPU path (reproducing a laptop result bit
    for bit) and so a multi-GPU pod can pin ``cuda:1``.

    Raises:
        ValueError: ``$KUBETUNE_DEVICE`` names a device this machine does not have.
    """
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(f"{DEVICE_ENV}={requested!r} is not a torch device ({err})") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={requested!r} but CUDA is not available on this machine")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"{DEVICE_ENV}={requested!r} but MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
