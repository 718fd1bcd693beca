"""The checkpoint store: ``tinker://`` paths, where they live on disk, and what is known about them.

``tinker://<model_id>/weights/<name>`` (training state, ``save_state``),
``tinker://<model_id>/sampler_weights/<name>`` (``save_weights_for_sampler``) and
``tinker://<model_id>/external_weights/<name>`` (``save_weights_external``, downloaded through signed
URLs: ``external.py``) resolve inside the caller's own tenant directory, so another tenant's
checkpoints are not found rather than refused::

    <root>/<tenant>/<model_id>/run.json                         base model, LoRA, owner, metadata
    <root>/<tenant>/<model_id>/weights/<name>/state/            engine.save_state (adapter + AdamW + RNG)
    <root>/<tenant>/<model_id>/weights/<name>/sampler/          the same weights as a PEFT adapter
    <root>/<tenant>/<model_id>/weights/<name>/checkpoint.json   written last: the checkpoint is complete
    <root>/<tenant>/<model_id>/sampler_weights/<name>/sampler/
    <root>/<tenant>/<model_id>/sampler_weights/<name>/checkpoint.json
    <root>/<tenant>/<model_id>/external_weights/<name>/sampler/   the exported PEFT adapter (the download)
    <root>/<tenant>/<model_id>/external_weights/<name>/checkpoint.json
    <root>/<tenant>/<model_id>/snapshots/<sampler_id>/          ephemeral sampler weights

Names are scoped per model, so ``final`` may repeat across runs. A training checkpoint carries its
base model and LoRA settings (in ``state/``), so ``load_weights`` can recreate a model from the path
alone.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, cast

from ..errors import UnknownModelError, UserError

SCHEME = "tinker://"
Kind = Literal["weights", "sampler_weights", "external_weights"]
# Path segment -> the SDK's CheckpointType (tinker.types.checkpoint.ParsedCheckpointTinkerPath).
CHECKPOINT_TYPES: dict[str, str] = {"weights": "training", "sampler_weights": "sampler",
                                     "external_weights": "external"}
META_FILE = "checkpoint.json"
RUN_FILE = "run.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:=+-]{0,127}$")  # model ids and names become directories


def check_component(value: str, what: str) -> str:
    """A model id or checkpoint name that is safe as one directory name (no '/', no '..')."""
    if not _SAFE.match(value) or ".." in value:
        raise UserError(
            f"{what} {value!r} is not allowed: use letters, digits and . _ : = + - (at most 128, "
            "starting with a letter or digit)"
        )
    return value


@dataclass(frozen=True)
class CheckpointRef:
    """A parsed ``tinker://<model_id>/<kind>/<name>`` path."""

    model_id: str
    kind: Kind
    name: str

    @property
    def tinker_path(self) -> str:
        return f"{SCHEME}{self.model_id}/{self.kind}/{self.name}"

    @property
    def checkpoint_id(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, path: str) -> CheckpointRef:
        if not path.startswith(SCHEME):
            raise UserError(f"checkpoint path {path!r} must look like tinker://<model_id>/weights/<name>")
        parts = path[len(SCHEME):].split("/")
        if len(parts) != 3 or parts[1] not in CHECKPOINT_TYPES:
            raise UserError(
                f"checkpoint path {path!r} must look like tinker://<model_id>/weights/<name>, "
                "tinker://<model_id>/sampler_weights/<name> or tinker://<model_id>/external_weights/<name>"
            )
        kind = cast(Kind, parts[1])  # one of CHECKPOINT_TYPES, checked above
        return cls(check_component(parts[0], "model id"), kind, check_component(parts[2], "checkpoint name"))


class CheckpointStore:
    """Checkpoint directories and metadata under ``root``, one subtree per tenant."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- paths
    def run_dir(self, tenant: str, model_id: str) -> Path:
        return self.root / tenant / check_component(model_id, "model id")

    def checkpoint_dir(self, tenant: str, ref: CheckpointRef) -> Path:
        return self.run_dir(tenant, ref.model_id) / ref.kind / ref.name

    def state_dir(self, tenant: str, ref: CheckpointRef) -> Path:
        return self.checkpoint_dir(tenant, ref) / "state"

    def sampler_dir(self, tenant: str, ref: CheckpointRef) -> Path:
        """The checkpoint's PEFT adapter directory (every kind has one)."""
        return self.checkpoint_dir(tenant, ref) / "sampler"

    def adapter_files(self, tenant: str, ref: CheckpointRef) -> dict[str, Path]:
        """The adapter's files by '/'-separated path relative to the adapter directory."""
        root = self.sampler_dir(tenant, ref)
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    def snapshot_dir(self, tenant: str, model_id: str, sampler_id: str) -> Path:
        return self.run_dir(tenant, model_id) / "snapshots" / check_component(sampler_id, "sampler id")

    def exists(self, tenant: str, ref: CheckpointRef) -> bool:
        return (self.checkpoint_dir(tenant, ref) / META_FILE).is_file()

    def require(self, tenant: str, ref: CheckpointRef) -> Path:
        """The checkpoint's directory; a clear error if this tenant has no such checkpoint."""
        if not self.exists(tenant, ref):
            raise UnknownModelError(f"no checkpoint {ref.tinker_path}; list yours with "
                                    "RestClient.list_user_checkpoints()")
        return self.checkpoint_dir(tenant, ref)

    # ------------------------------------------------------------- metadata
    def write_run(self, tenant: str, model_id: str, info: dict[str, Any]) -> None:
        run = self.run_dir(tenant, model_id)
        run.mkdir(parents=True, exist_ok=True)
        _write_json(run / RUN_FILE, info)

    def read_run(self, tenant: str, model_id: str) -> dict[str, Any] | None:
        path = self.run_dir(tenant, model_id) / RUN_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def mark_complete(self, tenant: str, ref: CheckpointRef, *, user_metadata: dict[str, str] | None,
                      ttl_seconds: int | None) -> dict[str, Any]:
        """Writes ``checkpoint.json`` last, which makes the checkpoint visible and loadable."""
        now = datetime.now(timezone.utc)
        meta = {
            "created": now.isoformat(),
            "user_metadata": user_metadata,
            "expires_at": (now + timedelta(seconds=ttl_seconds)).isoformat() if ttl_seconds else None,
        }
        _write_json(self.checkpoint_dir(tenant, ref) / META_FILE, meta)
        return self.describe(tenant, ref)

    def read_meta(self, tenant: str, ref: CheckpointRef) -> dict[str, Any] | None:
        """``checkpoint.json`` of a complete checkpoint; ``None`` if there is none."""
        path = self.checkpoint_dir(tenant, ref) / META_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def describe(self, tenant: str, ref: CheckpointRef) -> dict[str, Any]:
        """The checkpoint as the SDK's ``types.Checkpoint`` JSON."""
        directory = self.checkpoint_dir(tenant, ref)
        meta = json.loads((directory / META_FILE).read_text())
        return {
            "checkpoint_id": ref.checkpoint_id,
            "checkpoint_type": CHECKPOINT_TYPES[ref.kind],
            "time": meta["created"],
            "tinker_path": ref.tinker_path,
            "size_bytes": sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()),
            "public": False,
            "user_metadata": meta.get("user_metadata"),
            "expires_at": meta.get("expires_at"),
        }

    def list(self, tenant: str, model_id: str | None = None) -> list[dict[str, Any]]:
        """This tenant's complete checkpoints (of one model, or all), newest first."""
        base = self.root / tenant
        if model_id is not None:
            runs = [self.run_dir(tenant, model_id)]
        else:
            runs = sorted(base.glob("*")) if base.is_dir() else []
        found = []
        for run in runs:
            for kind in CHECKPOINT_TYPES:
                for meta in sorted((run / kind).glob(f"*/{META_FILE}")):
                    ref = CheckpointRef(run.name, cast(Kind, kind), meta.parent.name)
                    found.append(self.describe(tenant, ref))
        return sorted(found, key=lambda c: c["time"], reverse=True)

    def models(self, tenant: str) -> list[str]:
        base = self.root / tenant
        return sorted(p.parent.name for p in base.glob(f"*/{RUN_FILE}")) if base.is_dir() else []

    def delete(self, tenant: str, ref: CheckpointRef) -> None:
        directory = self.require(tenant, ref)
        (directory / META_FILE).unlink()  # invisible first, then gone
        shutil.rmtree(directory, ignore_errors=True)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # A rename is atomic: readers see the old file or the new one, never half of it.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)

