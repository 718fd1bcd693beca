"""The training steps: one recipe run turned into a model artifact, and the reuse cache a sweep's
branches share their warm starts through.

The data path runs one way through artifacts: dataset dir → base model dir → trained model dir
(PEFT adapter, the run's logs, the training server's checkpoints for an in-step server,
``kubetune-model.json``) → evaluation. A step that continues from an earlier one (PPO or DPO after
SFT) reads the earlier model artifact: with a server started inside the step it copies that
artifact's checkpoint store into its own, so the ``tinker://`` state path stays valid; with a
shared server the path already is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..api.embedded import embedded_server
from ..checkpoint.lock import exclusive
from ..models.reference import kubetune_home
from ..recipes import RECIPES
from .artifacts import MODEL_INFO, read_model_info, record_training


def train(recipe: str, data_dir: str | Path, model_dir: str | Path, out_dir: str | Path, *,
          training_api_url: str = "", api_key: str = "tml-local", params: dict[str, Any] | None = None,
          log=print) -> dict[str, Any]:
    """Runs one recipe and turns its output into a model artifact in ``out_dir``.

    Args:
        recipe: ``sft``, ``ppo`` or ``dpo`` (``kubetune.recipes.RECIPES``).
        data_dir: a dataset artifact (Spider layout).
        model_dir: the base model artifact, or a trained model artifact to continue from (its state
            is the starting point; its base model is used).
        out_dir: the output model artifact: ``adapter/`` (PEFT directory), ``run/`` (metrics.jsonl,
            result.json), ``checkpoints/`` (runs on a server started here) and ``kubetune-model.json``.
        training_api_url: a shared kubetune server; empty starts one in this process for the run.
        api_key: the key for that server.
        params: recipe settings (fields of SFTConfig / PPOConfig / DPOConfig).

    Returns:
        The model info written to ``kubetune-model.json`` (includes ``eval`` and ``seconds``).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    config_cls, run = RECIPES[recipe]
    params = dict(params or {})
    source = read_model_info(model_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = out_dir / "checkpoints"
    continued = source["kind"] == "trained" and recipe != "sft"
    if continued:
        params["init_state"] = source["state_path"]
        if not training_api_url and (Path(model_dir) / "checkpoints").is_dir():
            shutil.copytree(Path(model_dir) / "checkpoints", checkpoints, dirs_exist_ok=True)

    def run_on(url: str, base_model: str) -> tuple[Any, dict[str, Any]]:
        config = config_cls(data_dir=Path(data_dir), out_dir=out_dir / "run", base_url=url,
                            base_model=base_model, api_key=api_key, **params)
        return config, run(config, log=log)

    if training_api_url:
        # A shared server names the tiny model by its reference: the copy in this artifact is not its path.
        config, result = run_on(training_api_url, source.get("reference", source["base_model"]))
    else:
        with embedded_server(source["base_model"], checkpoint_dir=checkpoints) as server:
            config, result = run_on(server.url, server.model_name)
    shutil.copytree(result["adapter_dir"], out_dir / "adapter", dirs_exist_ok=True)
    # The adapter's rank is set where it was created; a run that continues from a state keeps it.
    lora_rank = source.get("lora_rank") if continued else config.lora_rank
    info = {"kind": "trained", "recipe": recipe, "base_model": source["base_model"], "lora_rank": lora_rank,
            "state_path": result["state_path"], "sampler_path": result["sampler_path"], "adapter": "adapter",
            "training_api_url": training_api_url, "eval": result["eval"], "seconds": result["seconds"],
            "steps": result["steps"]}
    (out_dir / MODEL_INFO).write_text(json.dumps(info, indent=2))
    return info


def directory_digest(path: str | Path) -> str:
    """sha256 over every file's relative path and bytes under ``path`` (sorted; the directory's content)."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def train_reusing(reuse_dir: str | Path, recipe: str, data_dir: str | Path, model_dir: str | Path,
                  out_dir: str | Path, *, training_api_url: str = "", api_key: str = "tml-local",
                  params: dict[str, Any] | None = None, log=print) -> dict[str, Any]:
    """``train``, unless an identical run finished before under ``reuse_dir``: then its model artifact is
    copied. Identical means the same recipe settings, dataset bytes, starting-model bytes and server,
    so the copy is what training would produce (runs are seeded). This is how a sweep's branches share
    one SFT warm start per LoRA rank. Concurrent identical runs wait for the first (a file lock) rather
    than train twice. ``reuse_dir`` ``"auto"``: ``$KUBETUNE_HOME/reuse``."""
    root = kubetune_home() / "reuse" if str(reuse_dir) == "auto" else Path(reuse_dir)
    identity = {"recipe": recipe, "params": params or {}, "training_api_url": training_api_url,
                "dataset": directory_digest(data_dir), "model": directory_digest(model_dir)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]
    entry = root / f"{recipe}-{key}"
    with exclusive(root / f"{recipe}-{key}.lock"):
        if (entry / MODEL_INFO).is_file():
            log(f"reusing the identical {recipe} run in {entry}")
            shutil.copytree(entry, out_dir, dirs_exist_ok=True)
            return {**read_model_info(out_dir), "reused_from": str(entry)}
        info = train(recipe, data_dir, model_dir, out_dir, training_api_url=training_api_url, api_key=api_key,
                     params=params, log=log)
        partial = root / f".{entry.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(out_dir, partial)
        partial.rename(entry)  # whole or absent: a crash mid-copy never leaves a half entry to reuse
    return info


def train_component(recipe: str, dataset, init_model, model, metrics, training_api_url: str,
                    params: dict[str, Any], reuse_dir: str = "") -> str:
    """A training component's whole body: train from the input artifacts (or reuse an identical run,
    see ``train_reusing``), fill the output ones (the API key comes from ``TINKER_API_KEY``, a
    Kubernetes Secret on a cluster). Returns the state's path."""
    kwargs = {"training_api_url": training_api_url, "api_key": os.environ.get("TINKER_API_KEY", "tml-local"),
              "params": params}
    if reuse_dir:
        info = train_reusing(reuse_dir, recipe, dataset.path, init_model.path, model.path, **kwargs)
    else:
        info = train(recipe, dataset.path, init_model.path, model.path, **kwargs)
    return record_training(info, model, metrics)
