"""Model references: the one string a user gives to name a base model, and loading what it names.

Accepted forms:
    ``tiny`` / ``embedded``  the bootstrapped tiny Gemma3, cached under ``$KUBETUNE_HOME/models/tiny-gemma``
    ``/path/to/dir``         a local Hugging Face directory (must contain ``config.json``)
    ``org/name``             a Hugging Face Hub model id, e.g. ``google/gemma-3-1b-it``
    ``gs://bucket/path``     planned; not supported yet
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .device import pick_device

logger = logging.getLogger(__name__)

TINY_REFS = frozenset({"tiny", "embedded"})
HOME_ENV = "KUBETUNE_HOME"
# org/name with the characters the Hub allows; one slash only, so "a/b/c" is not mistaken for an id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_LISTED_ENTRIES = 20  # cap on the directory listing in error messages


class ModelRefError(ValueError):
    """A model reference that names nothing loadable; the message says what was expected."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference.

    Attributes:
        ref: The string as given.
        kind: ``"tiny"``, ``"local"`` or ``"hub"``.
        source: What ``from_pretrained`` receives: a directory path, or the Hub id.
    """

    ref: str
    kind: Literal["tiny", "local", "hub"]
    source: str


def kubetune_home() -> Path:
    """``$KUBETUNE_HOME``, default ``~/.cache/kubetune``: kubetune's own caches (models, datasets)."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "kubetune").expanduser()


def tiny_model_dir() -> Path:
    """Where ``tiny`` / ``embedded`` lives: ``$KUBETUNE_HOME/models/tiny-gemma``."""
    return kubetune_home() / "models" / "tiny-gemma"


def resolve_model_ref(ref: str) -> ModelRef:
    """Classifies ``ref`` and checks what can be checked without loading or touching the network.

    An existing local path wins over the Hub-id reading (``org/name`` may also be a relative
    directory), as in ``from_pretrained``.

    Args:
        ref: ``tiny``/``embedded``, a local directory, an ``org/name`` Hub id, or ``gs://…``.

    Returns:
        A :class:`ModelRef`. For ``tiny`` the directory may not exist yet; :func:`load_base_model`
        bootstraps it.

    Raises:
        ModelRefError: A local path that is not a model directory, or a string of no accepted form.
        NotImplementedError: ``gs://`` references (planned).
    """
    text = ref.strip()
    if text.lower() in TINY_REFS:
        return ModelRef(ref=ref, kind="tiny", source=str(tiny_model_dir()))
    if text.startswith("gs://"):
        raise NotImplementedError(
            f"model ref {ref!r}: loading from Google Cloud Storage is planned but not supported yet; "
            "copy it to a local directory first (e.g. `gcloud storage cp -r gs://bucket/path ./model`) "
            "and pass that directory"
        )
    if "://" in text:
        raise ModelRefError(f"model ref {ref!r}: unsupported URL scheme; {_ACCEPTED}")
    path = Path(text).expanduser()
    if path.exists() or _looks_like_path(text):
        return ModelRef(ref=ref, kind="local", source=str(_check_model_dir(path, ref)))
    if _HUB_ID.match(text):
        return ModelRef(ref=ref, kind="hub", source=text)
    raise ModelRefError(f"model ref {ref!r} is neither an existing directory nor an org/name Hub id; "
                        f"{_ACCEPTED}")


def load_base_model(
    ref: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tiny_corpus: Callable[[int], Sequence[str]] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads the base model and its tokenizer named by ``ref``, in eval mode on ``device``.

    ``tiny`` is bootstrapped on first use from ``tiny_corpus(0)`` (a couple of minutes on a laptop,
    then a cache hit); the embedded default passes its task's pretraining corpus
    (``kubetune.tasks.text2sql.pretraining_corpus``). Without one, a tiny model not built yet is an error.
    Hub ids go through ``from_pretrained`` and so honour ``HF_HUB_OFFLINE`` and the HF cache.

    Args:
        ref: See :func:`resolve_model_ref`.
        device: Default :func:`~kubetune.models.device.pick_device`.
        dtype: Default float32, except bfloat16 on CUDA (LoRA training keeps the base frozen, and
            bf16 halves its memory); CPU kernels are fastest and exact in float32.

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (eos if the checkpoint had none).
    """
    resolved = resolve_model_ref(ref)
    if resolved.kind == "tiny" and tiny_corpus is not None:
        from .bootstrap import bootstrap_tiny_model  # heavy: only when asked for

        bootstrap_tiny_model(resolved.source, tiny_corpus(0))
    elif resolved.kind == "tiny" and not (Path(resolved.source) / "config.json").is_file():
        raise ModelRefError(f"the tiny model is not built yet in {resolved.source}: run `kubetune model "
                            f"bootstrap --out {resolved.source}`, or load it with its corpus")
    device = torch.device(device) if device is not None else pick_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    logger.info("loading base model %s (%s) on %s as %s", ref, resolved.source, device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(resolved.source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=dtype)
    model.to(device).eval()
    return model, tokenizer


_ACCEPTED = "expected 'tiny' (or 'embedded'), a local model directory, an org/name Hub id, or gs://bucket/path"


def _looks_like_path(text: str) -> bool:
    # Explicit path syntax means the user meant a directory; do not fall through to the Hub.
    return (text.startswith(("/", "./", "../", "~")) or text in (".", "..") or text.count("/") > 1
            or "\\" in text)


def _check_model_dir(path: Path, ref: str) -> Path:
    if not path.exists():
        raise ModelRefError(f"model ref {ref!r}: directory {path} does not exist")
    if not path.is_dir():
        raise ModelRefError(f"model ref {ref!r}: {path} is a file, "
                            "expected a model directory with config.json")
    if not (path / "config.json").is_file():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        shown = ", ".join(entries[:_LISTED_ENTRIES]) + (" …" if len(entries) > _LISTED_ENTRIES else "")
        raise ModelRefError(
            f"model ref {ref!r}: {path} has no config.json, so it is not a Hugging Face model directory; "
            f"found: {shown or '(empty directory)'}"
        )
    return path.resolve()
