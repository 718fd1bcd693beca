"""Compile the pipelines and components to YAML, and parse ``--param name=value`` pipeline arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_CASTS = {"Integer": int, "Float": float, "String": str,
          "Boolean": lambda v: v.lower() in ("1", "true", "yes"),
          "List": json.loads, "Dict": json.loads}


def compile_pipelines(out_dir: str | Path, gpu: bool = True) -> list[Path]:
    """Every pipeline to ``<out_dir>/<name>.yaml`` (what the Kubeflow UI uploads)."""
    from kfp import compiler

    from . import ClusterSettings, build_pipelines

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in build_pipelines(ClusterSettings(gpu=gpu)).items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        paths.append(path)
    return paths


COMPONENT_YAML_DIR = Path(__file__).resolve().parents[1] / "components" / "yaml"  # the repo's, committed


def compile_components(out_dir: str | Path = COMPONENT_YAML_DIR) -> list[Path]:
    """Every component to ``<out_dir>/<name>.yaml``, for ``kfp.components.load_component_from_file``."""
    from kfp import compiler

    import kubetune.components as components

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sorted(n for n in components.__all__ if n != "KUBETUNE_IMAGE"):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(getattr(components, name), str(path))
        paths.append(path)
    return paths


def parse_params(pipeline, pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → typed pipeline arguments, with a clear error for unknown names or bad values."""
    inputs = pipeline.component_spec.inputs or {}
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: write it as name=value")
        if name not in inputs:
            raise ValueError(f"--param {name!r}: {pipeline.name} has no such parameter; "
                             f"it takes {', '.join(sorted(inputs))}")
        kind = inputs[name].type
        try:
            params[name] = _CASTS.get(kind, str)(value)
        except ValueError:  # json.JSONDecodeError is one too
            raise ValueError(f"--param {name}={value!r}: not a valid {kind}" +
                             (" (write JSON, e.g. '[{\"run_name\": \"a\", ...}]')"
                              if kind in ("List", "Dict") else "")) from None
    return params
